"""The optional ws-gateway REST subscription, against a local HTTP server that behaves like
ws-gateway's /api/v1/subscriptions (CONTRACTS.md §4.4): X-API-Key auth, idempotent 200."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from msd.bus.ws_gateway_api import SubscriptionFailed, subscribe_all
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for

KEY = "test-key"


class Gateway:
    def __init__(self):
        self.requests, self.healthy, self.active = [], True, {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.requests.append((self.headers.get("X-API-Key"), body))
                if self.headers.get("X-API-Key") != KEY:
                    return self._reply(401, {"error": "Invalid API key", "code": "AUTHENTICATION_FAILED"})
                if not gateway.healthy:
                    return self._reply(500, {"detail": "database unavailable"})
                prefix = {"ticker": "tickers", "orderbook": "orderbook.1", "trades": "publicTrade",
                          "kline": "kline.1"}[body["channel_type"]]
                topic = f"{prefix}.{body['symbol']}"
                row = gateway.active.setdefault((body["requesting_service"], topic), {
                    "id": f"sub-{len(gateway.active)}", "channel_type": body["channel_type"], "symbol": body["symbol"],
                    "topic": topic, "requesting_service": body["requesting_service"], "is_active": True})
                self._reply(200, row)

            def _reply(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def gateway():
    g = Gateway()
    yield g
    g.server.shutdown()


def test_subscribes_every_channel_of_every_asset_idempotently(gateway):
    first = subscribe_all(gateway.url, KEY, "model-service", ["ETHUSDT", "BTCUSDT"])
    again = subscribe_all(gateway.url, KEY, "model-service", ["BTCUSDT", "ETHUSDT"])
    assert [s.topic for s in first] == [s.topic for s in again]
    assert {s.topic for s in first} == {"tickers.BTCUSDT", "orderbook.1.BTCUSDT", "publicTrade.BTCUSDT",
                                        "kline.1.BTCUSDT", "tickers.ETHUSDT", "orderbook.1.ETHUSDT",
                                        "publicTrade.ETHUSDT", "kline.1.ETHUSDT"}
    assert len(gateway.active) == 8
    assert all(key == KEY and body["requesting_service"] == "model-service" for key, body in gateway.requests)


def test_bad_key_is_a_clear_failure(gateway):
    with pytest.raises(SubscriptionFailed, match="HTTP 401.*AUTHENTICATION_FAILED"):
        subscribe_all(gateway.url, "wrong", "model-service", ["BTCUSDT"])


STRATEGY = {"id": "s1", "assets": ["BTCUSDT"], "rate": {"rate_per_s": 1, "burst": 1},
            "warmup": {"min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": 100}}


def gateway_config(gateway, tmp_path, dsn, vhost) -> dict:
    """A daemon config with one strategy on BTCUSDT, subscribing at the fake `gateway`."""
    return base_config(tmp_path, dsn, amqp_url(vhost), signaller={"strategies": [STRATEGY]},
                       consumer={"subscriptions": {"url": gateway.url, "api_key_env": "WS_GATEWAY_API_KEY",
                                                   "retry_s": 1}})


@pytest.mark.integration
def test_daemon_reports_a_failing_gateway_as_degraded_and_recovers(gateway, tmp_path, fresh_vhost, monkeypatch):
    gateway.healthy = False
    monkeypatch.setenv("WS_GATEWAY_API_KEY", KEY)
    dsn = create_database()
    cfg = gateway_config(gateway, tmp_path, dsn, fresh_vhost)
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        down = wait_for(lambda: (lambda s: s if s.get("up") is False else None)(ws_gateway(d)), 10,
                        what="ws-gateway reported down")
        assert "HTTP 500" in down["reason"]
        assert any(p.startswith("consumer: ws-gateway down: ") for p in d.status()["daemon"]["problems"])
        assert d.role("consumer")["state"] == "RUNNING"
        gateway.healthy = True
        wait_for(lambda: d.role("consumer")["status"].get("subscriptions") == 4, 10, what="subscribed")
        assert ws_gateway(d)["up"] is True
    finally:
        d.close()
        drop_database(dsn)


def ws_gateway(daemon) -> dict:
    """The consumer's view of ws-gateway (msd.roles.runtime.DependencyHealth)."""
    return (daemon.role("consumer")["status"].get("dependencies") or {}).get("ws-gateway", {})


@pytest.mark.integration
def test_asset_added_by_a_reload_is_subscribed_at_ws_gateway_without_restarting_the_consumer(
        gateway, tmp_path, fresh_vhost, monkeypatch):
    """Regression (issue #11): the consumer reads signaller.strategies but was neither restarted nor
    told when it changed, so an asset added by a reload was not subscribed at ws-gateway until the
    consumer restarted for another reason."""
    monkeypatch.setenv("WS_GATEWAY_API_KEY", KEY)
    dsn = create_database()
    cfg = gateway_config(gateway, tmp_path, dsn, fresh_vhost)
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        wait_for(lambda: d.role("consumer")["status"].get("subscriptions") == 4, 10, what="BTCUSDT subscribed")
        before = d.status()
        cfg["signaller"]["strategies"] = [{**STRATEGY, "assets": ["BTCUSDT", "ETHUSDT"]}]
        d.write_config(cfg)
        wait_for(lambda: d.status()["daemon"]["config_loaded_at"] > before["daemon"]["config_loaded_at"], 5,
                 what="reload")
        wait_for(lambda: {topic for _, topic in gateway.active} >= {"tickers.ETHUSDT", "orderbook.1.ETHUSDT",
                                                                    "publicTrade.ETHUSDT", "kline.1.ETHUSDT"},
                 10, what="ETHUSDT subscribed at ws-gateway")
        wait_for(lambda: d.role("consumer")["status"].get("subscriptions") == 8, 5, what="8 channels in status")
        assert d.role("consumer")["pid"] == before["roles"]["consumer"]["pid"]
    finally:
        d.close()
        drop_database(dsn)


@pytest.mark.integration
def test_open_position_in_an_asset_no_strategy_trades_got_no_prices(gateway, tmp_path, fresh_vhost, monkeypatch):
    """Regression: only the strategies' assets were subscribed at ws-gateway, so a position opened
    by hand (or by a strategy since removed) was watched by the exits role on the positions row's
    mark alone. Open positions' assets are subscribed too; a closed one's and a malformed name
    are not."""
    import psycopg2
    from msd.store.neighbours import create_neighbour_tables

    monkeypatch.setenv("WS_GATEWAY_API_KEY", KEY)
    dsn = create_database()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        create_neighbour_tables(conn)
        cur.execute("""INSERT INTO positions (asset, size, average_entry_price, current_price) VALUES
                       ('SOLUSDT', 2, 150, 151), ('XRPUSDT', 0, NULL, 0.5), ('not an asset', 1, 1, 1)""")
    cfg = gateway_config(gateway, tmp_path, dsn, fresh_vhost)
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        wait_for(lambda: {topic for _, topic in gateway.active} >= {"tickers.SOLUSDT", "publicTrade.SOLUSDT",
                                                                    "tickers.BTCUSDT"},
                 15, what="SOLUSDT subscribed at ws-gateway")
        wait_for(lambda: d.role("consumer")["status"].get("subscriptions") == 8, 5, what="8 channels in status")
        symbols = {body["symbol"] for _, body in gateway.requests}
        assert symbols == {"BTCUSDT", "SOLUSDT"}
    finally:
        d.close()
        drop_database(dsn)
