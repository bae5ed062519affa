"""Prometheus metrics, shared by every process in multiprocess mode.

`msd.metrics_dir.prepare_multiprocess_dir()` must run in the supervisor before this module is
first imported (it sets PROMETHEUS_MULTIPROC_DIR, which spawned children inherit; see there).
Each process then writes its own files in that directory; the supervisor serves the merged view.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from msd.metrics_dir import ENV


def mark_process_dead(pid: int) -> None:
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)


def render() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


MESSAGES_CONSUMED = Counter("msd_messages_consumed_total", "Valid messages processed by the consumer", ["source"])
MESSAGES_INVALID = Counter("msd_messages_invalid_total", "Invalid inbound messages dead-lettered", ["source", "reason"])
EXECUTIONS_RECORDED = Counter("msd_executions_recorded_total", "Executions (fill deltas) persisted")
DUPLICATE_EVENTS = Counter("msd_order_events_duplicate_total", "Order events already recorded (natural key)")
DATAPLANE_DROPPED = Counter("msd_dataplane_dropped_total", "Items dropped because a data-plane queue was full",
                            ["queue"])
BATCH_SECONDS = Histogram("msd_consumer_batch_seconds", "Time to persist one consumed batch",
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
DEPENDENCY_UP = Gauge("msd_dependency_up", "1 while the role's last operation on the dependency succeeded, 0 after "
                      "one failed (database, broker, ws-gateway)", ["role", "dependency"], multiprocess_mode="livemax")
BROKER_CONNECTS = Counter("msd_broker_connections_opened_total", "Broker connections opened (a reconnect counts "
                          "again)", ["connection"])
MESSAGE_FAILURES = Counter("msd_message_failures_total", "Inputs whose handling failed unexpectedly and were "
                           "skipped or dead-lettered (the role went on)", ["role", "stage"])
DEAD_LETTERS_NOT_STORED = Counter("msd_dead_letters_not_stored_total", "Dead letters only counted because their "
                                  "source reached consumer.dead_letters.max_stored_per_source", ["source"])
DEAD_LETTERS_PURGED = Counter("msd_dead_letters_purged_total", "Dead letters deleted after "
                              "consumer.dead_letters.retention_days")
NOTIFY_DROPPED = Counter("msd_systemd_notifications_dropped_total", "sd_notify datagrams not sent because the "
                         "notify socket was full or gone (never waited for)")
CHILD_RESTARTS = Counter("msd_child_restarts_total", "Child processes respawned by the supervisor", ["role"])
CHILD_UP = Gauge("msd_child_running", "1 while the role is RUNNING", ["role"], multiprocess_mode="livemax")
PROCESS_RSS = Gauge("msd_process_rss_bytes", "Resident memory of each process of the daemon (supervisor, roles, "
                    "trainer), 0 while it is not running", ["role"], multiprocess_mode="livemax")
LEADERSHIP_TRANSITIONS = Counter("msd_leadership_transitions_total", "This instance's role changes, by the role "
                                 "it took (leader, standby)", ["to"])
LEADER = Gauge("msd_leader", "1 while this instance holds the leadership lease (or leadership is disabled)",
               multiprocess_mode="livemax")
CONFIG_RELOADS = Counter("msd_config_reloads_total", "Configuration reloads", ["result"])
TRAINING_RUNS = Counter("msd_training_runs_total", "Trainer processes that ended", ["outcome"])
SIGNALS_PUBLISHED = Counter("msd_signals_published_total", "Signals confirmed by the broker", ["strategy", "mode"])
SIGNALS_NOTIONAL = Counter("msd_signals_published_usdt_total", "USDT amount of the signals confirmed by the broker",
                           ["strategy", "mode"])
SIGNALS_EXPIRED = Counter("msd_signals_expired_total", "Signals not sent because they waited longer than "
                          "signaller.max_signal_age_s, or exits.max_signal_age_s for exits (which are then "
                          "decided again); not publish failures", ["strategy", "mode"])
SIGNALS_VOIDED = Counter("msd_signals_voided_total", "Pending signals voided instead of sent because their role "
                         "found them obsolete just before sending: exits whose position closed, flipped or "
                         "became smaller than the exit while they waited (the position is then decided "
                         "again); neither expiries nor publish failures", ["strategy", "mode", "reason"])
SIGNALS_UNCONFIRMED = Counter("msd_signals_unconfirmed_total", "Signals whose broker connection was lost while "
                              "their confirm was awaited: they may have been delivered, and are published again "
                              "under the same signal_id (order-manager dedupes)", ["strategy", "mode"])
OUTBOX_PENDING = Gauge("msd_outbox_pending", "Signals waiting in the outbox, by the role that sends them", ["role"],
                       multiprocess_mode="livemax")
OUTBOX_OLDEST_AGE = Gauge("msd_outbox_oldest_pending_seconds", "Age of the oldest signal waiting in the outbox",
                          ["role"], multiprocess_mode="livemax")
SIGNALS_INVALID = Counter("msd_signals_invalid_total", "Signals that failed order-manager's rules (bugs)",
                          ["strategy"])
SIGNALS_LOST = Counter("msd_signals_not_recorded_total", "Signals that could not be written to the outbox",
                       ["strategy", "cause"])
SIGNALS_DROPPED = Counter("msd_signals_dropped_total", "Evaluations that produced no signal, by reason",
                          ["strategy", "reason"])
EXIT_FALLBACK = Gauge("msd_exits_fallback", "1 while the exit role polls the positions table instead of reacting "
                      "to position updates", multiprocess_mode="livemax")
EXIT_EVALUATIONS = Counter("msd_exit_evaluations_total", "Exit rule evaluations, by what triggered them",
                           ["trigger"])
EXIT_SIGNALS = Counter("msd_exit_signals_total", "Exit signals recorded in the outbox", ["reason"])
EXITS_SUPPRESSED = Counter("msd_exits_suppressed_total", "Holds of an exit a rule fired but that was not sent, by "
                           "reason (in_flight, cooldown, asset_rate, rejection_backoff, below_min_order_value, ...): "
                           "one per position and reason while it lasts, not one per evaluation", ["reason"])
EXITS_NOT_SENT = Counter("msd_exit_signals_failed_total", "Attempts to record an exit signal that failed, by cause "
                         "(a decision retried is counted per attempt; a lost reply of a write that committed is "
                         "counted here and, once found, in msd_exit_signals_total)", ["cause"])
EXIT_INPUTS_INVALID = Counter("msd_exit_inputs_invalid_total", "Position updates skipped as invalid or incomplete",
                              ["reason"])
EXIT_ERRORS = Counter("msd_exit_evaluation_errors_total", "Exceptions raised while evaluating one position")
EXIT_UPDATES = Counter("msd_exit_position_updates_total", "Position updates taken by the exit role")
EXITS_IN_FLIGHT = Gauge("msd_exits_in_flight", "Exits sent whose effect the positions table does not show yet",
                        multiprocess_mode="livemax")
EXITS_STALLED = Gauge("msd_exits_stalled", "Exits in flight longer than exits.in_flight_timeout_s",
                      multiprocess_mode="livemax")
EXIT_STALLS = Counter("msd_exit_in_flight_stalled_total", "Exits whose effect was not seen within "
                      "exits.in_flight_timeout_s (nothing is re-sent until a newer positions row)")
EXIT_ORDERS_UNFILLED = Counter("msd_exit_orders_unfilled_total", "Exit orders that ended with nothing filled, by "
                               "status (decided again at once; from the second refusal in a row, after a backoff)",
                               ["status"])
EXITS_REFUSED_BACKOFF = Gauge("msd_exit_positions_refused_backoff", "Open positions whose exits order-manager "
                              "refused twice or more in a row: their next decision waits a backoff (up to 5 min)",
                              multiprocess_mode="livemax")
EXIT_POSITIONS_BELOW_MINIMUM = Gauge("msd_exit_positions_below_minimum", "Open positions worth less than "
                                     "order-manager's minimum order value: no exit signal can close them",
                                     multiprocess_mode="livemax")
EXIT_POSITIONS_REFUSED = Gauge("msd_exit_positions_refused", "Open positions the exit role leaves alone, by reason",
                               ["reason"], multiprocess_mode="livemax")
EXIT_POSITIONS_UNPRICED = Gauge("msd_exit_positions_without_market_data", "Open positions evaluated from the "
                                "positions table's price because their asset has no market data",
                                multiprocess_mode="livemax")
DATAPLANE_BACKLOG = Gauge("msd_dataplane_backlog", "Position updates and closed bars waiting in the consumer "
                          "for room in a full data-plane queue (never dropped)", ["queue"],
                          multiprocess_mode="livemax")
TRAINING_TRIGGERS = Counter("msd_training_triggers_total", "Training requests sent, by trigger", ["trigger"])
MODEL_QUALITY_DEGRADED = Gauge("msd_model_quality_degraded", "1 while a strategy's live model quality is degraded",
                               ["strategy"], multiprocess_mode="livemax")
MODEL_QUALITY_THRESHOLD = Gauge("msd_model_quality_threshold", "trainer.quality.threshold: live accuracy below "
                                "it (minus hysteresis) degrades a model", multiprocess_mode="livemax")
MODEL_LIVE_ACCURACY = Gauge("msd_model_live_accuracy", "Share of the active model's recent labelled calls that paid after costs",
                            ["strategy"], multiprocess_mode="livemax")
TRAINING_SKIPPED = Counter("msd_training_skipped_total", "Strategy training attempts skipped, by cause "
                           "(e.g. data drought)", ["strategy", "cause"])
MODEL_CALIBRATION_GAP = Gauge("msd_model_live_calibration_gap", "Mean confidence minus pay rate of the active "
                              "model's labelled calls (positive = overconfident)", ["strategy"],
                              multiprocess_mode="livemax")
MODEL_MISCALIBRATED = Gauge("msd_model_miscalibrated", "1 while |calibration gap| exceeds "
                            "trainer.quality.max_calibration_gap", ["strategy"], multiprocess_mode="livemax")
WARMUP_SPEND = Gauge("msd_warmup_spend_usdt", "Warm-up spend of the current budget: minus the sum of the "
                     "labelled warm-up calls' results after costs on the traded notional, plus the worst "
                     "case charged for calls left without a label", ["strategy"], multiprocess_mode="livemax")
WARMUP_UNLABELLED = Gauge("msd_warmup_unlabelled_calls", "Traded warm-up calls of the current budget whose "
                          "horizon ended without a label (charged at warmup.unlabelled_loss_pct)",
                          ["strategy"], multiprocess_mode="livemax")
WARMUP_LABELS_STALLED = Gauge("msd_warmup_labels_stalled", "1 while a warm-up strategy's labels have stopped "
                              "arriving (its newest finished call has none and no later call has one)",
                              ["strategy"], multiprocess_mode="livemax")
WARMUP_PAUSED = Gauge("msd_warmup_paused", "1 while the strategy is paused (no new entries)", ["strategy"],
                      multiprocess_mode="livemax")
# Where the time of tick -> signal goes, observed for each signal decided on a market update:
# consumer (delivery received -> handed to the data plane: batching, decoding, committing),
# dataplane (the queue between the processes), queued_in_turn (taken -> its snapshot taken),
# exposure (the snapshot and reading the shared tables), strategy (the pure decisions from that read
# to the end of the turn's, the strategies decided after it included), outbox_write (encoding and
# the committed outbox row), publish_confirm (until the broker confirmed), and total
# (delivery received -> confirmed). The broker hops themselves are outside msd.
SIGNAL_PATH_SECONDS = Histogram("msd_signal_path_seconds", "Time of each stage between a market update's delivery "
                                "and the broker's confirm of the signal decided on it", ["stage"],
                                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
                                         0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0))
CONSUMER_STAGE_SECONDS = Histogram("msd_consumer_stage_seconds", "Time of each stage of one consumed batch "
                                   "(decode, persist = the committed transaction, forward = data-plane puts)",
                                   ["stage"], buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005,
                                                       0.01, 0.025, 0.05, 0.1, 1.0))
MARKET_COALESCED = Counter("msd_market_updates_coalesced_total", "Market updates merged into a newer update of the "
                           "same asset before the signaller's next decision turn (decided on once, not dropped)")
STRATEGY_DECISIONS = Counter("msd_strategy_decisions_total", "Times a strategy was evaluated on an asset "
                             "(a market update or its schedule), whatever it decided", ["strategy"])
