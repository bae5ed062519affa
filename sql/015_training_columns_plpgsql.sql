-- The training columns of 009 (msd.signals.snap_*) cost ~280 µs per inserted signal: each of
-- their ten expressions calls a LANGUAGE sql function whose body has a FROM clause, which
-- PostgreSQL cannot inline, so every call ran a small query of its own (measured on this
-- machine: 20,000 inserts 5.7 s with the columns against 0.04 s without). The same
-- functions in PL/pgSQL (plans cached per session, the numeric parsed once per value)
-- cost ~43 µs per insert (0.86 s for the 20,000).
-- Same signatures and the same results (tests/integration/test_training_bulk.py compares the
-- columns with Python's reading of every snapshot), so the generated columns are unchanged
-- and no stored row needs recomputing.

CREATE OR REPLACE FUNCTION msd.json_float8(value jsonb) RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n numeric := msd.json_numeric(value);
BEGIN
    -- float8 input refuses magnitudes beyond these instead of rounding to 0 or infinity.
    RETURN CASE WHEN n = 0 OR abs(n) BETWEEN 1e-300 AND 1e300 THEN n::float8 ELSE 'NaN'::float8 END;
END
$$;

CREATE OR REPLACE FUNCTION msd.json_needs_python(value jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n numeric := msd.json_numeric(value);
BEGIN
    RETURN coalesce((jsonb_typeof(value) = 'string' AND n IS NULL)
                    OR (n <> 0 AND abs(n) NOT BETWEEN 1e-300 AND 1e300), false);
END
$$;
