"""The server's enrollment decisions, one rule at a time (pure: no store, no network)."""

from __future__ import annotations

from kiosk.server import enrollment as e

NOW = 1_795_000_000.0
KEY, OTHER = "a" * 64, "b" * 64
FRESH = e.Token(expires_at=NOW + 3600, used_at=None)
EXPIRED = e.Token(expires_at=NOW - 1, used_at=None)
USED = e.Token(expires_at=NOW + 3600, used_at=NOW - 10)
ISSUED = e.Issued("dev-1", KEY, revoked=False)


def test_a_fresh_token_enrolls_under_a_new_id() -> None:
    assert e.decide(FRESH, None, None, KEY, NOW) == e.Issue(None, approved=False)


def test_an_unknown_token_is_refused() -> None:
    assert isinstance(refused := e.decide(None, None, None, KEY, NOW), e.Refuse)
    assert refused.code == "token-unknown"


def test_the_same_key_again_gets_the_same_answer() -> None:
    assert e.decide(USED, ISSUED, None, KEY, NOW) == e.Repeat("dev-1")
    late = NOW + 3600 + e.RETRY_GRACE_SECONDS - 1  # within the token's life plus the grace period
    assert e.decide(USED, ISSUED, None, KEY, late) == e.Repeat("dev-1")


def test_a_used_token_with_another_key_is_refused() -> None:
    refused = e.decide(USED, ISSUED, None, OTHER, NOW)
    assert isinstance(refused, e.Refuse) and refused.code == "token-used" and "another unit" in refused.message


def test_a_repeat_after_the_grace_period_or_of_a_revoked_unit_is_refused() -> None:
    too_late = e.decide(USED, ISSUED, None, KEY, NOW + 3600 + e.RETRY_GRACE_SECONDS + 1)
    assert isinstance(too_late, e.Refuse) and too_late.code == "token-used"
    revoked = e.decide(USED, e.Issued("dev-1", KEY, revoked=True), None, KEY, NOW)
    assert isinstance(revoked, e.Refuse) and revoked.code == "device-revoked"


def test_an_expired_unused_token_is_held_for_approval() -> None:
    assert e.decide(EXPIRED, None, None, KEY, NOW) == e.Wait(None)
    assert e.decide(EXPIRED, None, e.Held("dev-2", KEY, e.AWAITING), KEY, NOW) == e.Wait("dev-2")


def test_approval_and_rejection_hold_only_for_the_held_key() -> None:
    assert e.decide(EXPIRED, None, e.Held("dev-2", KEY, e.APPROVED), KEY, NOW) == e.Issue("dev-2", approved=True)
    rejected = e.decide(EXPIRED, None, e.Held("dev-2", KEY, e.REJECTED), KEY, NOW)
    assert isinstance(rejected, e.Refuse) and rejected.code == "enrollment-rejected"
    thief = e.decide(EXPIRED, None, e.Held("dev-2", KEY, e.APPROVED), OTHER, NOW)
    assert isinstance(thief, e.Refuse) and thief.code == "token-held"


def test_an_approved_unit_that_lost_its_answer_gets_it_again() -> None:
    used_after_approval = e.Token(expires_at=NOW - 86400, used_at=NOW - 5)
    assert e.decide(used_after_approval, e.Issued("dev-2", KEY, False), e.Held("dev-2", KEY, e.ENROLLED),
                    KEY, NOW) == e.Repeat("dev-2")
