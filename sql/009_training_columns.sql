-- Training columns (issue #13): the snapshot numbers the features read, stored beside each
-- signal when it is written, so that the trainer reads a million decisions as plain float8
-- columns (binary COPY) instead of taking every jsonb snapshot apart again (that was most of
-- the minute a training run spent building its dataset).
--
-- Generated columns: PostgreSQL computes them on every insert and update of `snapshot`, and
-- computes them for the existing rows when this migration adds them (the backfill).
-- They hold exactly what msd.values.parsing.float_or_nan makes of the JSON value: a finite
-- float, or NaN when the value is absent, JSON null, a bool, an object or array, or text that is
-- not a number. Two kinds of value SQL cannot read the way Python does, and `snap_unusual`
-- marks the row so the trainer reads it again from its snapshot in Python: text that is not
-- plainly numeric (spaces, underscores, "Infinity"...), and magnitudes beyond float8's range.
-- Which paths: msd.ml.features.NUMBER_PATHS and OBJECT_PATHS; a feature recipe that reads
-- another snapshot field needs a migration adding its column (the store names the column
-- after the path: snap_<keys joined by _>).

CREATE FUNCTION msd.json_numeric(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
           WHEN 'number' THEN value::numeric
           WHEN 'string' THEN CASE WHEN (value #>> '{}') ~ '^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$'
                                   THEN (value #>> '{}')::numeric END
           END
$$;

-- float8 input refuses magnitudes beyond these instead of rounding to 0 or infinity.
CREATE FUNCTION msd.json_float8(value jsonb) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN n = 0 OR abs(n) BETWEEN 1e-300 AND 1e300 THEN n::float8 ELSE 'NaN'::float8 END
      FROM (SELECT msd.json_numeric(value) AS n) parsed
$$;

CREATE FUNCTION msd.json_needs_python(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((jsonb_typeof(value) = 'string' AND n IS NULL)
                    OR (n <> 0 AND abs(n) NOT BETWEEN 1e-300 AND 1e300), false)
      FROM (SELECT msd.json_numeric(value) AS n) parsed
$$;

ALTER TABLE msd.signals
    ADD COLUMN snap_price float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'price')) STORED,
    ADD COLUMN snap_volatility float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'volatility')) STORED,
    ADD COLUMN snap_spread float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'spread')) STORED,
    ADD COLUMN snap_orderbook_depth_bid_depth float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'orderbook_depth' -> 'bid_depth')) STORED,
    ADD COLUMN snap_orderbook_depth_ask_depth float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'orderbook_depth' -> 'ask_depth')) STORED,
    ADD COLUMN snap_technical_indicators_return_1m float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'technical_indicators' -> 'return_1m')) STORED,
    ADD COLUMN snap_technical_indicators_return_5m float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'technical_indicators' -> 'return_5m')) STORED,
    ADD COLUMN snap_technical_indicators_return_15m float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'technical_indicators' -> 'return_15m')) STORED,
    ADD COLUMN snap_technical_indicators_sma_60m float8 GENERATED ALWAYS AS
        (msd.json_float8(snapshot -> 'technical_indicators' -> 'sma_60m')) STORED,
    ADD COLUMN snap_technical_indicators_is_object boolean GENERATED ALWAYS AS
        (coalesce(jsonb_typeof(snapshot -> 'technical_indicators') = 'object', false)) STORED,
    ADD COLUMN snap_unusual boolean GENERATED ALWAYS AS
        (msd.json_needs_python(snapshot -> 'price')
         OR msd.json_needs_python(snapshot -> 'volatility')
         OR msd.json_needs_python(snapshot -> 'spread')
         OR msd.json_needs_python(snapshot -> 'orderbook_depth' -> 'bid_depth')
         OR msd.json_needs_python(snapshot -> 'orderbook_depth' -> 'ask_depth')
         OR msd.json_needs_python(snapshot -> 'technical_indicators' -> 'return_1m')
         OR msd.json_needs_python(snapshot -> 'technical_indicators' -> 'return_5m')
         OR msd.json_needs_python(snapshot -> 'technical_indicators' -> 'return_15m')
         OR msd.json_needs_python(snapshot -> 'technical_indicators' -> 'sma_60m')) STORED;
