"""Maintenance announcements against each kind's rules: notice, window, continuous, budget
(issue 3, "Maintenance"; Haivision §4 table, Numezis §4.1, NEXON §4.1-4.2)."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.rules.maintenance import judge_maintenance
from collector.rules.model import Announcement
from collector.rules.policy import PolicyError, load_policy
from rules_support import UTC

CHICAGO = ZoneInfo("America/Chicago")
ZURICH = ZoneInfo("Europe/Zurich")
H = timedelta(hours=1)
M = timedelta(minutes=1)


def ct(*args) -> datetime:
    """Central Time wall clock -> UTC instant."""
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)


def ann(kind, start, end, notice=timedelta(days=10)):
    return Announcement(kind, start - notice, start, end)


VCMS = load_policy("haivision-vcms-write", target_percent=99.9)


def judge(policy, *announcements):
    return judge_maintenance(policy, list(announcements))


def rules_broken(j):
    return [r["rule"] for r in j.broken_rules]


def test_normal_within_every_rule_is_compliant_and_excludes_all_of_itself():
    start, end = ct(2026, 10, 3, 22), ct(2026, 10, 4, 4)      # 22:00-04:00, 6 h, within 22:00-05:00
    [j] = judge(VCMS, Announcement("normal", start - 48 * H, start, end))   # exactly 48 h notice
    assert j.compliant and j.broken_rules == () and j.allowed == ((start, end),)
    assert j.allowed_minutes == 360


def test_notice_broken_excludes_nothing():
    start, end = ct(2026, 10, 3, 22), ct(2026, 10, 4, 1)
    [j] = judge(VCMS, Announcement("normal", start - 48 * H + M, start, end))   # one minute short of 48 h
    assert not j.compliant and rules_broken(j) == ["notice"] and j.allowed == ()
    assert "needs at least 2d notice" in j.broken_rules[0]["detail"]


def test_window_broken_excludes_nothing():
    [j] = judge(VCMS, ann("normal", ct(2026, 10, 3, 21), ct(2026, 10, 3, 23)))   # 21:00 is before 22:00
    assert rules_broken(j) == ["window"] and j.allowed == ()
    assert "2026-10-03 21:00 CDT to 2026-10-03 22:00 CDT is outside the normal window 22:00–05:00" in \
        j.broken_rules[0]["detail"]


def test_window_crossing_midnight_end_is_exclusive():
    [ok] = judge(VCMS, ann("normal", ct(2026, 10, 3, 23), ct(2026, 10, 4, 5)))     # ends exactly at 05:00
    assert ok.compliant
    [late] = judge(VCMS, ann("normal", ct(2026, 10, 4, 0), ct(2026, 10, 4, 5, 1)))
    assert rules_broken(late) == ["window"]


def test_continuous_broken_excludes_only_the_part_beyond_it():
    start, end = ct(2026, 10, 3, 22), ct(2026, 10, 4, 5)       # the whole window: 7 h > 6 h
    [j] = judge(VCMS, ann("normal", start, end))
    assert rules_broken(j) == ["continuous"] and not j.compliant
    assert j.allowed == ((start, start + 6 * H),)


def test_window_and_continuous_both_reported():
    [j] = judge(VCMS, ann("normal", ct(2026, 10, 3, 23), ct(2026, 10, 4, 6)))
    assert rules_broken(j) == ["window", "continuous"] and j.allowed == ()


def test_budget_is_used_in_start_order_and_the_rest_excludes_nothing():
    first = ann("normal", ct(2026, 10, 3, 22), ct(2026, 10, 4, 4))      # 6 h
    second = ann("normal", ct(2026, 10, 10, 22), ct(2026, 10, 11, 3))   # 5 h: only 4 h of budget left
    third = ann("normal", ct(2026, 10, 17, 22), ct(2026, 10, 17, 23))   # 1 h: none left
    nov = ann("normal", ct(2026, 11, 7, 22), ct(2026, 11, 8, 4))        # a new month, a new budget
    j3, j1, jn, j2 = judge(VCMS, third, first, nov, second)             # given out of order
    assert j1.compliant and j1.allowed_minutes == 360
    assert rules_broken(j2) == ["budget"] and j2.allowed == ((second.start, second.start + 4 * H),)
    assert "10h normal budget for 2026-10 (6h already used): the last 1h" in j2.broken_rules[0]["detail"]
    assert rules_broken(j3) == ["budget"] and j3.allowed == ()
    assert jn.compliant and jn.allowed_minutes == 360


def test_broken_announcements_do_not_use_the_budget():
    late = Announcement("normal", ct(2026, 10, 3, 21), ct(2026, 10, 3, 22), ct(2026, 10, 4, 4))   # 1 h notice
    full = ann("normal", ct(2026, 10, 10, 22), ct(2026, 10, 11, 4))
    more = ann("normal", ct(2026, 10, 17, 22), ct(2026, 10, 18, 2))
    j_late, j_full, j_more = judge(VCMS, late, full, more)
    assert rules_broken(j_late) == ["notice"]
    assert j_full.compliant and j_more.compliant        # 6 h + 4 h = the 10 h budget


def test_urgent_rules():
    start = ct(2026, 10, 6, 14)                           # "Any Time": 14:00 is fine
    [j] = judge(VCMS, Announcement("urgent", start - 3 * H, start, start + 20 * M))
    assert rules_broken(j) == ["continuous"] and j.allowed == ((start, start + 15 * M),)
    [short] = judge(VCMS, Announcement("urgent", start - 3 * H + M, start, start + 10 * M))
    assert rules_broken(short) == ["notice"]
    a, b, c = (ann("urgent", ct(2026, 10, d, 14), ct(2026, 10, d, 14, 15)) for d in (6, 7, 8))
    ja, jb, jc = judge(VCMS, a, b, c)                     # 30 minutes a month
    assert ja.compliant and jb.compliant and rules_broken(jc) == ["budget"] and jc.allowed == ()


def test_upgrade_rules():
    start = ct(2026, 10, 7, 0)
    [ok] = judge(VCMS, Announcement("upgrade", start - 5 * 24 * H, start, start + H))
    assert ok.compliant
    [notice] = judge(VCMS, Announcement("upgrade", start - 5 * 24 * H + M, start, start + H))
    assert rules_broken(notice) == ["notice"]
    [window] = judge(VCMS, ann("upgrade", ct(2026, 10, 7, 3, 30), ct(2026, 10, 7, 4, 30)))
    assert rules_broken(window) == ["window"]
    [long] = judge(VCMS, ann("upgrade", start, start + 90 * M))
    assert rules_broken(long) == ["continuous"] and long.allowed == ((start, start + H),)


def test_maintenance_across_the_dst_change_and_the_month_end():
    # 22:00 CDT 31 Oct to 05:00 CST 1 Nov is 8 real hours (the clocks go back at 02:00)
    start, end = ct(2026, 10, 31, 22), ct(2026, 11, 1, 5)
    assert end - start == 8 * H
    earlier = ann("normal", ct(2026, 10, 10, 22), ct(2026, 10, 11, 3), notice=10 * 24 * H)   # 5 h of October's budget
    earlier2 = ann("normal", ct(2026, 10, 17, 22), ct(2026, 10, 18, 2))                       # 4 h: 9 h used
    j1, j2, j = judge(VCMS, earlier, earlier2, ann("normal", start, end))
    assert j1.compliant and j2.compliant
    # 6 h continuous limit: allowed until 03:00 CST; October has 1 h budget left for its 2 h part
    assert rules_broken(j) == ["continuous", "budget"]
    assert j.allowed == ((start, start + H), (ct(2026, 11, 1, 0), start + 6 * H))
    assert start + 6 * H == ct(2026, 11, 1, 3)


def test_numezis_notice_only_for_more_than_15_minutes():
    p = load_policy("numezis-business")
    start = datetime(2026, 10, 10, 23, 0, tzinfo=ZURICH).astimezone(UTC)
    fifteen, sixteen = start + 15 * M, start + 16 * M
    j15, j16, j16_ok, emergency = judge(
        p,
        Announcement("planned", start - H, start, fifteen),          # 15 min, 1 h notice: no notice needed
        Announcement("planned", start - H, start, sixteen),          # 16 min, 1 h notice: 72 h needed
        Announcement("planned", start - 72 * H, start, sixteen),     # 16 min, exactly 72 h
        Announcement("emergency", start, start, start + 3 * H),      # §4.2: without prior notice
    )
    assert j15.compliant and j16_ok.compliant and emergency.compliant
    assert rules_broken(j16) == ["notice"]
    assert "required because it lasts 16m, more than 15m" in j16.broken_rules[0]["detail"]


def test_nexon_scheduled_needs_24_hours_emergency_none():
    p = load_policy("nexon-vision")
    start = datetime(2026, 11, 10, 2, tzinfo=UTC)
    ok, late, emergency = judge(p, Announcement("scheduled", start - 24 * H, start, start + H),
                                Announcement("scheduled", start - 23 * H, start, start + H),
                                Announcement("emergency", start + 5 * M, start, start + H))
    assert ok.compliant and rules_broken(late) == ["notice"] and emergency.compliant
    assert "announced 23h before its start" in late.broken_rules[0]["detail"]


def test_window_days_are_the_days_the_window_opens():
    p = VCMS.with_overrides(maintenance={"normal": {"window": {"start": "22:00", "end": "06:00", "days": ["sat", "sun"]}}})
    sat = ann("normal", ct(2026, 10, 3, 23), ct(2026, 10, 4, 1))      # Saturday night
    sun = ann("normal", ct(2026, 10, 4, 23), ct(2026, 10, 5, 1))      # Sunday night into Monday
    fri = ann("normal", ct(2026, 10, 2, 23), ct(2026, 10, 3, 1))      # Friday night
    js, ju, jf = judge(p, sat, sun, fri)
    assert js.compliant and ju.compliant and rules_broken(jf) == ["window"]


def test_unknown_kind_is_an_input_error_naming_the_kinds():
    with pytest.raises(PolicyError, match=r"maintenance kind 'scheduled' is not accepted by policy "
                                          r"'haivision-vcms-write' \(accepted kinds: normal, urgent, upgrade\)"):
        judge(VCMS, ann("scheduled", ct(2026, 10, 3, 22), ct(2026, 10, 3, 23)))


# -- notice judged from when the collector recorded the announcement -----------------------------

def recorded(kind, start, end, *, at, stated=None, **kw):
    """An announcement the collector recorded at `at`; `stated` is the time the operator states."""
    return Announcement(kind, stated, start, end, recorded_at=at, recorded_by="api", **kw)


def test_notice_is_judged_from_recorded_at_and_a_stated_time_only_where_trusted():
    # NEXON Vision SLA §4.1: "notified Customers at least 24 hours in advance"
    p = load_policy("nexon-vision")
    start = datetime(2026, 11, 10, 2, tzinfo=UTC)
    late = recorded("scheduled", start, start + H, at=start + 3 * H, stated=start - 9 * 24 * H)
    [j] = judge(p, late)
    assert rules_broken(j) == ["notice"] and j.allowed == ()
    assert j.notice["rule"] == "min_notice" and j.notice["judged_from"] == "recorded_at"
    assert j.notice["at"] == "2026-11-10T05:00:00Z" and j.notice["lead_seconds"] == -3 * 3600
    assert j.broken_rules[0]["detail"] == (
        "recorded 3h after its start; scheduled maintenance needs at least 1d notice (the stated announcement "
        "time 2026-11-01T02:00:00Z does not count: the policy does not trust stated notice, trust_stated_notice: false)")
    [trusted] = judge(p.with_overrides(trust_stated_notice=True), late)
    assert trusted.compliant and trusted.allowed == ((start, start + H),)
    assert trusted.notice["judged_from"] == "stated_announced" and trusted.notice["met"] is True
    # a stated time later than the recording is never used: the earlier of the two is when notice was given
    [own] = judge(p.with_overrides(trust_stated_notice=True),
                  recorded("scheduled", start, start + H, at=start - 25 * H, stated=start - H))
    assert own.compliant and own.notice["judged_from"] == "recorded_at"


@pytest.mark.parametrize("after, compliant, given", [(3 * H, True, "3h"), (24 * H, True, "1d"),
                                                      (25 * H, False, "25h")])
def test_numezis_emergency_ex_post_notice_within_24_hours(after, compliant, given):
    # Numezis SaaS SLA §4.2: "Numezis may intervene without prior notice. An ex post notification
    # will be sent within 24 hours."
    p = load_policy("numezis-business")
    start = datetime(2026, 10, 10, 23, tzinfo=ZURICH).astimezone(UTC)
    [j] = judge(p, recorded("emergency", start, start + 2 * H, at=start + after))
    assert j.compliant is compliant and j.notice["rule"] == "after_start_within"
    assert j.allowed == (((start, start + 2 * H),) if compliant else ())
    expected = f"recorded {given} after its start; emergency maintenance may be notified up to 1d after it starts"
    assert j.notice["detail"] == expected


def test_maintenance_needing_no_minimum_notice_must_still_be_recorded_by_its_start():
    numezis = load_policy("numezis-business")
    start = datetime(2026, 10, 10, 23, tzinfo=ZURICH).astimezone(UTC)
    # Numezis §4.1: 72 h only for more than 15 minutes; a 15-minute planned one is still planned ahead
    on_time, after = judge(numezis, recorded("planned", start, start + 15 * M, at=start),
                           recorded("planned", start, start + 15 * M, at=start + M))
    assert on_time.compliant and on_time.notice["rule"] == "by_start"
    assert rules_broken(after) == ["notice"]
    assert "planned maintenance needs no minimum notice when it lasts at most 15m, but must be recorded by its start" \
        in after.broken_rules[0]["detail"]
    # Nexcess: scheduled work recorded by its start; emergency "when possible in advance", so at any time
    nexcess = load_policy("nexcess")
    day = datetime(2026, 11, 3, 10, tzinfo=UTC)
    sched, emergency = judge(nexcess, recorded("scheduled", day, day + H, at=day + M),
                             recorded("emergency", day, day + H, at=day + 10 * 24 * H))
    assert rules_broken(sched) == ["notice"]
    assert emergency.compliant and emergency.notice["rule"] == "after_start_any"
    assert emergency.notice["detail"] == ("recorded 10d after its start; emergency maintenance may be notified at "
                                          "any time, also after it starts")


def test_cancelled_announcement_excludes_nothing_and_uses_no_budget():
    start = ct(2026, 10, 6, 14)
    cancelled = recorded("urgent", start, start + 15 * M, at=start - 4 * H, cancelled_at=start - 2 * H,
                         cancel_reason="moved")
    later = [recorded("urgent", ct(2026, 10, d, 14), ct(2026, 10, d, 14, 15), at=ct(2026, 10, d, 9)) for d in (7, 8)]
    jc, j7, j8 = judge(VCMS, cancelled, *later)
    assert rules_broken(jc) == ["cancelled"] and jc.allowed == ()
    assert jc.broken_rules[0]["detail"] == ("cancelled at 2026-10-06T17:00:00Z (moved): a cancelled announcement "
                                            "excludes nothing")
    assert j7.compliant and j8.compliant          # the 30 minutes of the month are theirs


def test_urgent_longer_than_its_continuous_maximum_excludes_per_the_policy_option():
    # Haivision §4 table, urgent: "15 Minutes" continuous at most; the preset excludes the first 15
    # minutes (up_to_max), the strict reading excludes nothing
    start = ct(2026, 10, 6, 14)
    long = Announcement("urgent", start - 3 * H, start, start + 40 * M)
    [j] = judge(VCMS, long)
    assert VCMS.maintenance["urgent"].over_max_continuous == "up_to_max"
    assert j.allowed == ((start, start + 15 * M),)
    strict = VCMS.with_overrides(maintenance={"urgent": {"over_max_continuous": "nothing"}})
    [s] = judge(strict, long)
    assert rules_broken(s) == ["continuous"] and s.allowed == ()
    assert "none of it excludes anything (over_max_continuous: nothing)" in s.broken_rules[0]["detail"]


@pytest.mark.parametrize("kind, message", [
    ({"notice_after_start_within": "soon"},
     "maintenance.emergency.notice_after_start_within: invalid duration 'soon' (give a duration such as 24h, or any "
     "for no limit)"),
    ({"min_notice": "1h", "notice_after_start_within": "24h"},
     "maintenance.emergency: notice_after_start_within allows notice after the start, so min_notice must be 0 (it is 1h)"),
    ({"over_max_continuous": "half"}, "maintenance.emergency.over_max_continuous: Input should be 'up_to_max' or 'nothing'"),
])
def test_bad_maintenance_options_are_named(kind, message):
    with pytest.raises(PolicyError) as err:
        load_policy("nexon-vision", maintenance={"emergency": kind})
    assert message in str(err.value)
