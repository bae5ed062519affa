-- The shared tables owned by order-manager and position-manager, exactly as their migrations
-- define them (CONTRACTS.md §5: TIMESTAMP without time zone, DECIMAL(20,8)). msd never writes
-- them in production; the paper exchange and the tests create and fill them to play those
-- services.

CREATE TABLE IF NOT EXISTS public.orders (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id          varchar(100)   NOT NULL UNIQUE,
    signal_id         uuid           NOT NULL,
    asset             varchar(20)    NOT NULL,
    side              varchar(10)    NOT NULL CHECK (side IN ('Buy', 'SELL')),
    order_type        varchar(20)    NOT NULL CHECK (order_type IN ('Market', 'Limit')),
    quantity          DECIMAL(20, 8) NOT NULL CHECK (quantity > 0),
    price             DECIMAL(20, 8),
    status            varchar(50)    NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'partially_filled', 'filled', 'cancelled',
                                        'rejected', 'dry_run')),
    filled_quantity   DECIMAL(20, 8) NOT NULL DEFAULT 0
                      CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    average_price     DECIMAL(20, 8),
    fees              DECIMAL(20, 8),
    created_at        TIMESTAMP      NOT NULL DEFAULT NOW(),
    updated_at        TIMESTAMP      NOT NULL DEFAULT NOW(),
    executed_at       TIMESTAMP,
    trace_id          varchar(100),
    is_dry_run        boolean        NOT NULL DEFAULT false,
    rejection_reason  text,
    CHECK (order_type <> 'Limit' OR (price IS NOT NULL AND price > 0))
);

CREATE TABLE IF NOT EXISTS public.signal_order_relationships (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    signal_id            uuid           NOT NULL,
    order_id             uuid           NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
    relationship_type    varchar(20)    NOT NULL
                         CHECK (relationship_type IN ('one_to_one', 'one_to_many', 'many_to_one')),
    execution_sequence   integer        CHECK (execution_sequence >= 1),
    allocation_amount    DECIMAL(20, 8) CHECK (allocation_amount > 0),
    allocation_quantity  DECIMAL(20, 8) CHECK (allocation_quantity > 0),
    created_at           TIMESTAMP      NOT NULL DEFAULT NOW(),
    UNIQUE (signal_id, order_id)
);

CREATE TABLE IF NOT EXISTS public.positions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    asset                varchar(20)    NOT NULL,
    size                 DECIMAL(20, 8) NOT NULL,
    average_entry_price  DECIMAL(20, 8) CHECK (average_entry_price IS NULL OR average_entry_price > 0),
    unrealized_pnl       DECIMAL(20, 8),
    realized_pnl         DECIMAL(20, 8),
    mode                 varchar(20)    NOT NULL DEFAULT 'one-way' CHECK (mode IN ('one-way', 'hedge')),
    long_size            DECIMAL(20, 8),
    short_size           DECIMAL(20, 8),
    long_avg_price       DECIMAL(20, 8) CHECK (long_avg_price > 0),
    short_avg_price      DECIMAL(20, 8) CHECK (short_avg_price > 0),
    last_updated         TIMESTAMP      NOT NULL DEFAULT NOW(),
    last_snapshot_at     TIMESTAMP,
    current_price        DECIMAL(20, 8),
    version              integer        NOT NULL DEFAULT 1,
    created_at           TIMESTAMP,
    closed_at            TIMESTAMP,
    UNIQUE (asset, mode)
);

-- order-manager's cache of Bybit's lot size filter (CONTRACTS §5, migration 016; §3.6 uses
-- lot_size, min_order_qty and min_order_value). Columns CONTRACTS lists; the rest of the real
-- table is not read by msd.
CREATE TABLE IF NOT EXISTS public.instrument_info (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol           varchar(20)    NOT NULL UNIQUE,
    lot_size         DECIMAL(20, 8) NOT NULL,
    min_order_qty    DECIMAL(20, 8) NOT NULL,
    max_order_qty    DECIMAL(20, 8) NOT NULL,
    min_order_value  DECIMAL(20, 8) NOT NULL,
    price_tick_size  DECIMAL(20, 8) NOT NULL,
    raw_response     jsonb,
    updated_at       TIMESTAMP      NOT NULL DEFAULT NOW()
);
