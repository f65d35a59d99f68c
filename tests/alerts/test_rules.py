from datetime import UTC, datetime, timedelta

from services.alerts.model import Rule, Thresholds
from services.alerts.rules import evaluate, peak_within, record_peak

# Noon UTC 60 days ago (peaks are kept per UTC day, so the time of day stays fixed).
T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=60)
TH = Thresholds(alert_below=40, rearm_margin=10, cooldown_hours=24, rules=[Rule.below_threshold])


def run(scores, thresholds=TH, start=T0, step=timedelta(hours=1)):
    states, peaks, open_rules, log = {}, [], None, []
    for i, s in enumerate(scores):
        ev = evaluate(
            thresholds, states, score=s, peaks=peaks, now=start + i * step, open_rules=open_rules
        )
        states, peaks = ev.states, ev.peaks
        if ev.fired and open_rules is None:
            open_rules = [r.value for r in ev.fired]
            log.append(("open", i))
        elif ev.resolve:
            open_rules = None
            log.append(("resolve", i))
    return log


def test_fires_once_below_threshold_then_hysteresis_holds():
    assert run([60, 39, 35, 30, 41, 45]) == [("open", 1)]


def test_recovery_above_threshold_plus_margin_resolves():
    assert run([60, 39, 49, 50]) == [("open", 1), ("resolve", 3)]


def test_cooldown_blocks_a_second_alert_then_lets_it_fire():
    hourly = run([60, 39, 55, 30, 30])
    assert hourly == [("open", 1), ("resolve", 2)]  # 30 within 24h of the first alert: quiet
    daily = run([60, 39, 55, 30], step=timedelta(hours=25))
    assert daily == [("open", 1), ("resolve", 2), ("open", 3)]


def test_cooldown_waits_while_armed_and_fires_when_it_ends():
    th = TH.model_copy(update={"cooldown_hours": 3})
    assert run([39, 55, 30, 30, 30], thresholds=th) == [("open", 0), ("resolve", 1), ("open", 3)]


def test_drop_rule_fires_on_a_fast_drop_above_the_threshold():
    th = Thresholds(drop_points=20, drop_days=7, rules=[Rule.score_drop])
    assert run([90, 85, 68, 60], thresholds=th) == [("open", 2)]
    assert run([90, 85, 68, 77, 78], thresholds=th) == [("open", 2), ("resolve", 4)]
    assert run([90, 85, 80, 75], thresholds=th) == []


def test_below_for_days_needs_persistence():
    th = Thresholds(alert_below=40, below_days=3, rules=[Rule.below_for_days])
    assert run([30, 30, 30, 30, 30], thresholds=th, step=timedelta(days=1)) == [("open", 3)]
    assert run([30, 30, 45, 30, 30], thresholds=th, step=timedelta(days=1)) == []


def test_disabled_rules_never_fire():
    th = Thresholds(rules=[])
    assert run([90, 10, 5]) != []
    assert run([90, 10, 5], thresholds=th) == []


def test_peaks_keep_daily_maxima_for_thirty_days():
    peaks = []
    for day in range(40):
        peaks = record_peak(peaks, 50 + day, T0 + timedelta(days=day))
        peaks = record_peak(peaks, 10, T0 + timedelta(days=day, hours=1))
    assert len(peaks) <= 31
    assert peak_within(peaks, 1, T0 + timedelta(days=39, hours=2)) == 89
