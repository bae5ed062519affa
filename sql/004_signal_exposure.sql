-- The exposure check adds msd's own signals that are not orders yet (pending in the outbox, or
-- sent moments ago); it looks them up by asset and time.
CREATE INDEX signals_asset_created_idx ON msd.signals (asset, created_at);
