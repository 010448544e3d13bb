"""Cost ledger: dated price book, metered training phases and serving windows, analyst views.

Raw quantities (CPU, wall and GPU seconds, GiB-seconds of memory, joules) are stored; money
is computed in views by joining the price version in force, so any period can be re-priced
with another version (`cost_of(..., price_id)`, `recsys costs summary --price-id`).

Analysts: the role recsys_analyst (NOLOGIN) may read the cost_* views and call cost_of(),
nothing else. Give it to a person with `GRANT recsys_analyst TO alice;`, or let it log in
itself with `ALTER ROLE recsys_analyst LOGIN PASSWORD '...';`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Over 350 lines on purpose: a migration is frozen history (the cost ledger's tables, views
and functions as first shipped); it is never edited or split after it landed.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The latency histogram's upper bucket bounds in milliseconds; a last, open bucket holds the
# rest. shared/usage.py LATENCY_BOUNDS_MS must stay equal (a test compares them).
LATENCY_BOUNDS_MS = (
    "0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, "
    "5000, 10000"
)
ANALYST_VIEWS = (
    "cost_prices, cost_training_phases, cost_training_runs, cost_inference_windows, "
    "cost_inference_daily, cost_daily, cost_by_model_version"
)

TABLES = """
-- One row per price version. A usage row is priced with the latest version whose valid_from
-- is not after it (ties: the highest price_id, so a correction added later wins).
CREATE TABLE price_book (
    price_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    valid_from    timestamptz NOT NULL,
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    vcpu_hour     numeric     NOT NULL CHECK (vcpu_hour >= 0),
    ram_gb_hour   numeric     NOT NULL CHECK (ram_gb_hour >= 0),
    gpu_hour      numeric     NOT NULL CHECK (gpu_hour >= 0),
    kwh           numeric     NOT NULL CHECK (kwh >= 0),
    energy_billed boolean     NOT NULL DEFAULT false,
    source        text        NOT NULL,
    note          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX price_book_in_force_idx ON price_book (valid_from DESC, price_id DESC);

-- No foreign keys to training_runs or model_versions on purpose: what was spent stays on the
-- ledger when runs or versions are deleted or truncated.
CREATE TABLE training_phase_usage (
    run_id         uuid             NOT NULL,
    seq            smallint         NOT NULL,
    phase          text             NOT NULL,
    model_version  text,
    task_id        text,
    host           text             NOT NULL,
    cpu_model      text             NOT NULL,
    cpu_count      integer          NOT NULL,
    gpu_name       text,
    started_at     timestamptz      NOT NULL,
    finished_at    timestamptz      NOT NULL,
    wall_seconds   double precision NOT NULL CHECK (wall_seconds >= 0),
    cpu_seconds    double precision NOT NULL CHECK (cpu_seconds >= 0),
    peak_rss_bytes bigint           NOT NULL CHECK (peak_rss_bytes >= 0),
    ram_gb_seconds double precision GENERATED ALWAYS AS
        (peak_rss_bytes / 1073741824.0 * wall_seconds) STORED,
    gpu_seconds    double precision NOT NULL DEFAULT 0 CHECK (gpu_seconds >= 0),
    energy_joules  double precision NOT NULL CHECK (energy_joules >= 0),
    energy_source  text             NOT NULL CHECK (energy_source IN ('estimate', 'rapl', 'nvml')),
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX training_phase_usage_started_idx ON training_phase_usage (started_at);
CREATE INDEX training_phase_usage_version_idx ON training_phase_usage (model_version);

-- One row per API process x time window x route x model version, written by a periodic flush
-- (never per request). The key makes a retried flush a no-op.
CREATE TABLE inference_usage (
    window_start           timestamptz      NOT NULL,
    window_end             timestamptz      NOT NULL,
    window_seconds         double precision NOT NULL CHECK (window_seconds >= 0),
    recorder_id            uuid             NOT NULL,
    host                   text             NOT NULL,
    pid                    integer          NOT NULL,
    route                  text             NOT NULL,
    model_version          text,
    requests               bigint           NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors                 bigint           NOT NULL DEFAULT 0 CHECK (errors >= 0),
    throttled              bigint           NOT NULL DEFAULT 0 CHECK (throttled >= 0),
    items                  bigint           NOT NULL DEFAULT 0 CHECK (items >= 0),
    cpu_seconds            double precision NOT NULL DEFAULT 0 CHECK (cpu_seconds >= 0),
    ram_gb_seconds         double precision NOT NULL DEFAULT 0 CHECK (ram_gb_seconds >= 0),
    energy_joules          double precision NOT NULL DEFAULT 0 CHECK (energy_joules >= 0),
    allocated_vcpu_seconds double precision NOT NULL DEFAULT 0
        CHECK (allocated_vcpu_seconds >= 0),
    latency_buckets        bigint[]         NOT NULL,
    CONSTRAINT inference_usage_key
        UNIQUE NULLS NOT DISTINCT (recorder_id, window_start, route, model_version),
    CHECK (window_end >= window_start)
);
CREATE INDEX inference_usage_window_idx ON inference_usage (window_start);
CREATE INDEX inference_usage_version_idx ON inference_usage (model_version, window_end);
"""

SEED = """
INSERT INTO price_book
    (valid_from, currency, vcpu_hour, ram_gb_hour, gpu_hour, kwh, energy_billed, source, note)
VALUES (
    '2024-10-17T00:00:00Z', 'USD', 0.031611, 0.004237, 0.35, 0.1033, false,
    'Google Cloud Compute Engine on-demand list prices, us-central1 (Iowa): N2 predefined '
    'vCPU 0.031611 USD/h (SKU BB77-5FDA-69D9) and N2 memory 0.004237 USD per GiB-hour '
    '(SKU 5B01-D157-A097), https://cloud.google.com/compute/vm-instance-pricing; NVIDIA T4 '
    'GPU 0.35 USD per GPU-hour ("Nvidia Tesla T4 GPU running in Americas"), '
    'https://cloud.google.com/compute/gpus-pricing; electricity: U.S. EIA Electric Power '
    'Annual 2023 (released 2024-10-17), Iowa commercial-sector average revenue 10.33 '
    'cents/kWh, https://www.eia.gov/electricity/annual/',
    'List prices as of 2024-10-17, before sustained-use, committed-use or spot discounts and '
    'taxes; check them against your own bill. Per-resource split as Google publishes it: '
    'n2-standard-4 = 4 x 0.031611 + 16 x 0.004237 = 0.194236 USD/h. Energy is reported but '
    'not billed (energy_billed false): a cloud VM price already pays for its power. For '
    'on-premises hardware add a version with --energy-billed and amortised hardware prices.'
);
"""

FUNCTIONS = f"""
CREATE FUNCTION latency_bounds_ms() RETURNS double precision[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ARRAY[{LATENCY_BOUNDS_MS}]::double precision[] $$;
COMMENT ON FUNCTION latency_bounds_ms() IS
    'Upper bounds (ms) of inference_usage.latency_buckets; the last bucket is open-ended.';

-- Element-wise sum of histograms, as an aggregate (STRICT: the first row seeds the state).
CREATE FUNCTION bucket_add(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                       FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) ORDER BY i) $$;
CREATE AGGREGATE bucket_sum(bigint[]) (SFUNC = bucket_add, STYPE = bigint[]);

-- Quantile from bucket counts: linear inside the bucket holding the rank (as Prometheus'
-- histogram_quantile); the open last bucket answers its lower bound. Mirrors usage.py.
CREATE FUNCTION latency_quantile_ms(q double precision, counts bigint[])
    RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH b AS (
        SELECT i, c, sum(c) OVER (ORDER BY i) AS cum,
               coalesce((latency_bounds_ms())[i - 1], 0) AS lo, (latency_bounds_ms())[i] AS hi
        FROM unnest(counts) WITH ORDINALITY AS t(c, i)
    ), total AS (SELECT sum(c) AS n FROM b)
    SELECT CASE WHEN b.hi IS NULL THEN b.lo
                ELSE b.lo + (b.hi - b.lo) * (q * total.n - (b.cum - b.c)) / b.c END
    FROM b, total
    WHERE total.n > 0 AND b.c > 0 AND b.cum >= q * total.n
    ORDER BY b.i LIMIT 1
$$;

-- The one pricing formula (costs.py phase_cost mirrors it). Energy is added only when the
-- price version says it is billed separately (on-premises); a cloud vCPU price includes it.
CREATE FUNCTION priced(cpu_seconds double precision, ram_gb_seconds double precision,
                       gpu_seconds double precision, energy_joules double precision,
                       price price_book)
    RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT cpu_seconds / 3600.0 * price.vcpu_hour::float8
         + ram_gb_seconds / 3600.0 * price.ram_gb_hour::float8
         + gpu_seconds / 3600.0 * price.gpu_hour::float8
         + CASE WHEN price.energy_billed THEN energy_joules / 3.6e6 * price.kwh::float8
                ELSE 0 END
$$;

-- Re-price any quantities with a named price version (SECURITY DEFINER: analysts may use it
-- without reading price_book itself).
CREATE FUNCTION cost_of(cpu_seconds double precision, ram_gb_seconds double precision,
                        gpu_seconds double precision, energy_joules double precision,
                        price_id bigint)
    RETURNS double precision LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp AS $$
    SELECT priced(cpu_seconds, ram_gb_seconds, gpu_seconds, energy_joules, p)
    FROM price_book p WHERE p.price_id = cost_of.price_id
$$;
COMMENT ON FUNCTION cost_of(double precision, double precision, double precision,
                            double precision, bigint) IS
    'Cost of (cpu s, RAM GiB-s, GPU s, joules) under price version price_id: re-pricing.';
"""

BASE_VIEWS = """
CREATE VIEW cost_prices AS
    SELECT price_id, valid_from, currency, vcpu_hour, ram_gb_hour, gpu_hour, kwh,
           energy_billed, source, note
    FROM price_book;
COMMENT ON VIEW cost_prices IS 'Price versions; each applies from valid_from to the next one.';

-- A run is priced with the version in force when its first phase started, so its phases
-- always share one price and currency.
CREATE VIEW cost_training_phases AS
    SELECT u.run_id, u.seq, u.phase, u.model_version, u.task_id, u.host, u.cpu_model,
           u.cpu_count, u.gpu_name, u.started_at, u.finished_at, u.wall_seconds,
           u.cpu_seconds, u.peak_rss_bytes, u.ram_gb_seconds, u.gpu_seconds, u.energy_joules,
           u.energy_source, (p.pb).price_id AS price_id, (p.pb).currency AS currency,
           priced(u.cpu_seconds, u.ram_gb_seconds, u.gpu_seconds, u.energy_joules, p.pb)
               AS cost
    FROM (SELECT t.*, min(t.started_at) OVER (PARTITION BY t.run_id) AS run_started_at
          FROM training_phase_usage t) u
    LEFT JOIN LATERAL (
        SELECT pb FROM price_book pb WHERE pb.valid_from <= u.run_started_at
        ORDER BY pb.valid_from DESC, pb.price_id DESC LIMIT 1
    ) p ON true;
COMMENT ON VIEW cost_training_phases IS
    'Each metered phase of each training run with its cost (price in force at the run start).';

CREATE VIEW cost_inference_windows AS
    SELECT u.window_start, u.window_end, u.window_seconds, u.host, u.pid, u.route,
           u.model_version, u.requests, u.errors, u.throttled, u.items, u.cpu_seconds,
           u.ram_gb_seconds, u.energy_joules, u.allocated_vcpu_seconds, u.latency_buckets,
           (p.pb).price_id AS price_id, (p.pb).currency AS currency,
           priced(u.cpu_seconds, u.ram_gb_seconds, 0, u.energy_joules, p.pb) AS used_cost,
           priced(u.allocated_vcpu_seconds, u.ram_gb_seconds, 0, u.energy_joules, p.pb)
               AS allocated_cost
    FROM inference_usage u
    LEFT JOIN LATERAL (
        SELECT pb FROM price_book pb WHERE pb.valid_from <= u.window_start
        ORDER BY pb.valid_from DESC, pb.price_id DESC LIMIT 1
    ) p ON true;
COMMENT ON VIEW cost_inference_windows IS
    'Each flushed serving window (process x window x route x model version) with its costs.';
"""

AGGREGATE_VIEWS = """
CREATE VIEW cost_training_runs AS
    SELECT ph.run_id,
           coalesce(r.model_version, max(ph.model_version)) AS model_version,
           coalesce(r.started_at, min(ph.started_at)) AS started_at,
           coalesce(r.finished_at, max(ph.finished_at)) AS finished_at,
           r.status::text AS status,
           sum(ph.wall_seconds) AS wall_seconds, sum(ph.cpu_seconds) AS cpu_seconds,
           max(ph.peak_rss_bytes) AS peak_rss_bytes, sum(ph.energy_joules) AS energy_joules,
           (ARRAY['estimate', 'rapl', 'nvml'])[min(array_position(
               ARRAY['estimate', 'rapl', 'nvml'], ph.energy_source))] AS energy_source,
           sum(ph.cost) AS cost, min(ph.currency) AS currency
    FROM cost_training_phases ph LEFT JOIN training_runs r ON r.run_id = ph.run_id
    GROUP BY ph.run_id, r.run_id;
COMMENT ON VIEW cost_training_runs IS
    'One row per training run that metered at least one phase (failed and over-budget too).';

CREATE VIEW cost_inference_daily AS
    SELECT (w.window_start AT TIME ZONE 'UTC')::date AS day, w.model_version, w.route,
           w.currency, sum(w.requests)::bigint AS requests, sum(w.errors)::bigint AS errors,
           sum(w.throttled)::bigint AS throttled, sum(w.items)::bigint AS items,
           sum(w.cpu_seconds) AS cpu_seconds, sum(w.energy_joules) AS energy_joules,
           sum(w.used_cost) AS used_cost, sum(w.allocated_cost) AS allocated_cost,
           latency_quantile_ms(0.5, bucket_sum(w.latency_buckets)) AS p50_ms,
           latency_quantile_ms(0.99, bucket_sum(w.latency_buckets)) AS p99_ms
    FROM cost_inference_windows w
    GROUP BY 1, w.model_version, w.route, w.currency;
COMMENT ON VIEW cost_inference_daily IS
    'Serving per UTC day, model version and route: volumes, CPU, used and allocated cost.';

CREATE VIEW cost_daily AS
    SELECT (started_at AT TIME ZONE 'UTC')::date AS day, 'training'::text AS path, currency,
           sum(cost) AS cost, sum(cost) AS used_cost, sum(cpu_seconds) AS cpu_seconds,
           sum(energy_joules) AS energy_joules
    FROM cost_training_phases GROUP BY 1, currency
    UNION ALL
    SELECT (window_start AT TIME ZONE 'UTC')::date, 'inference', currency,
           sum(allocated_cost), sum(used_cost), sum(cpu_seconds), sum(energy_joules)
    FROM cost_inference_windows GROUP BY 1, currency;
COMMENT ON VIEW cost_daily IS
    'Cost per UTC day and path (training | inference); inference cost is the allocated one.';

CREATE VIEW cost_by_model_version AS
    WITH training AS (
        SELECT model_version, currency, sum(cost) AS training_cost
        FROM cost_training_phases WHERE model_version IS NOT NULL
        GROUP BY model_version, currency
    ), inference AS (
        SELECT model_version, currency, window_end, sum(used_cost) AS used,
               sum(allocated_cost) AS allocated, sum(requests) AS requests
        FROM cost_inference_windows WHERE model_version IS NOT NULL
        GROUP BY model_version, currency, window_end
    ), cumulative AS (
        SELECT model_version, currency, window_end,
               sum(allocated) OVER (PARTITION BY model_version, currency ORDER BY window_end)
                   AS allocated_so_far
        FROM inference
    ), crossover AS (
        SELECT c.model_version, c.currency, min(c.window_end) AS overtook_at
        FROM cumulative c JOIN training t USING (model_version, currency)
        WHERE c.allocated_so_far > t.training_cost
        GROUP BY c.model_version, c.currency
    ), totals AS (
        SELECT model_version, currency, sum(used) AS used, sum(allocated) AS allocated,
               sum(requests) AS requests
        FROM inference GROUP BY model_version, currency
    )
    SELECT model_version, currency,
           coalesce(t.training_cost, 0) AS training_cost,
           coalesce(n.used, 0) AS inference_used_cost,
           coalesce(n.allocated, 0) AS inference_allocated_cost,
           coalesce(n.requests, 0)::bigint AS requests,
           n.allocated / nullif(n.requests, 0) * 1000 AS cost_per_1000_recommendations,
           (coalesce(t.training_cost, 0) + coalesce(n.allocated, 0))
               / nullif(n.requests, 0) * 1000 AS amortized_cost_per_1000,
           x.overtook_at AS inference_overtook_training_at
    FROM training t
    FULL JOIN totals n USING (model_version, currency)
    LEFT JOIN crossover x USING (model_version, currency);
COMMENT ON VIEW cost_by_model_version IS
    'Training against serving cost per model version, per 1,000 requests, and the crossover.';
"""

COLUMN_COMMENTS = {
    "cost_training_runs": {
        "run_id": "training_runs.run_id",
        "model_version": "version the run produced (null: failed, skipped or over budget)",
        "started_at": "when the run started (its first phase if the run row is gone)",
        "finished_at": "when the run ended (its last phase if the run row is gone)",
        "status": "training_runs.status (null if the run row was deleted)",
        "wall_seconds": "sum of the phases' wall-clock seconds",
        "cpu_seconds": "sum of the phases' process CPU seconds (user + system, all threads)",
        "peak_rss_bytes": "largest resident set of any phase",
        "energy_joules": "sum of the phases' energy",
        "energy_source": "weakest source among the phases: estimate < rapl < nvml",
        "cost": "priced with the version in force at the run start (see cost_prices)",
        "currency": "ISO 4217 code of cost",
    },
    "cost_inference_daily": {
        "day": "UTC day of the window start",
        "model_version": "version that answered (null: routes that use no model, e.g. events)",
        "route": "route template, or (idle) for windows without requests",
        "requests": "answered requests, errors included, throttled (429) excluded",
        "errors": "answers with status >= 500",
        "throttled": "requests refused with 429 by the rate limiter",
        "items": "items returned (recommended or similar items)",
        "cpu_seconds": "process CPU apportioned to the route by its share of handler time",
        "used_cost": "CPU actually spent + memory held, priced",
        "allocated_cost": "vCPUs allocated to the API processes x time + memory, priced",
        "p50_ms": "median latency from the summed histogram (ms)",
        "p99_ms": "99th percentile latency from the summed histogram (ms)",
        "currency": "ISO 4217 code of the costs",
    },
    "cost_daily": {
        "day": "UTC day",
        "path": "training | inference",
        "cost": "training: metered cost; inference: allocated cost",
        "used_cost": "training: metered cost; inference: used cost",
        "cpu_seconds": "CPU seconds spent",
        "energy_joules": "energy (serving: always an estimate from CPU time and memory)",
        "currency": "ISO 4217 code of the costs; costs in different currencies are never added",
    },
    "cost_by_model_version": {
        "model_version": "model_versions.version",
        "currency": "ISO 4217 code of the costs",
        "training_cost": "cost of the run that produced the version (all its phases)",
        "inference_used_cost": "serving cost by CPU spent while this version answered",
        "inference_allocated_cost": "serving cost by capacity allocated while it answered",
        "requests": "requests this version answered",
        "cost_per_1000_recommendations": "inference_allocated_cost per 1,000 requests",
        "amortized_cost_per_1000": "(training_cost + inference_allocated_cost) per 1,000 requests",
        "inference_overtook_training_at": "end of the window in which cumulative allocated "
        "serving cost first exceeded training_cost; null if not yet",
    },
}


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _column_comments() -> str:
    return "\n".join(
        f"COMMENT ON COLUMN {view}.{column} IS '{_quoted(text)}';"
        for view, columns in COLUMN_COMMENTS.items()
        for column, text in columns.items()
    )


# The role is cluster-wide: created if missing (two databases may migrate at once), never
# dropped here. It reads the views only: views run with their owner's rights on base tables.
ANALYST_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recsys_analyst') THEN
        CREATE ROLE recsys_analyst NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM recsys_analyst;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM recsys_analyst;
GRANT SELECT ON {ANALYST_VIEWS} TO recsys_analyst;
REVOKE ALL ON FUNCTION cost_of(double precision, double precision, double precision,
                               double precision, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cost_of(double precision, double precision, double precision,
                                  double precision, bigint) TO recsys_analyst;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(SEED)
    op.execute(FUNCTIONS)
    op.execute(BASE_VIEWS)
    op.execute(AGGREGATE_VIEWS)
    op.execute(_column_comments())
    op.execute(ANALYST_ROLE)


def downgrade() -> None:
    op.execute(f"""
    REVOKE ALL ON {ANALYST_VIEWS} FROM recsys_analyst;
    DROP VIEW cost_by_model_version, cost_daily, cost_inference_daily, cost_training_runs,
        cost_inference_windows, cost_training_phases, cost_prices;
    DROP FUNCTION cost_of(double precision, double precision, double precision,
                          double precision, bigint);
    DROP FUNCTION priced(double precision, double precision, double precision,
                         double precision, price_book);
    DROP FUNCTION latency_quantile_ms(double precision, bigint[]);
    DROP AGGREGATE bucket_sum(bigint[]);
    DROP FUNCTION bucket_add(bigint[], bigint[]);
    DROP FUNCTION latency_bounds_ms();
    DROP TABLE inference_usage;
    DROP TABLE training_phase_usage;
    DROP TABLE price_book;
    """)
    # recsys_analyst stays: it is cluster-wide and other databases may use it.
