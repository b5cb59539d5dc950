"""The pure rules of HTTP upload: signed ids and URLs, file names, headers, quotas."""

from __future__ import annotations

from roost.modules.upload.engine import (
    DAY,
    Ledger,
    Limits,
    RateWindow,
    Signer,
    content_disposition,
    normal_type,
    safe_filename,
    type_allowed,
)

SECRET = b"k" * 32


def limits(**kw: int) -> Limits:
    base = dict(
        max_file_size=1000, quota_bytes=0, quota_files=0, daily_bytes=0, daily_files=0, slots_per_minute=0
    )
    base.update(kw)
    return Limits(**base)


def test_slot_ids_are_unguessable_and_checked() -> None:
    signer = Signer(SECRET)
    ids = {signer.new_id() for _ in range(100)}
    assert len(ids) == 100
    for slot_id in ids:
        assert signer.valid_id(slot_id)
        flipped = ("A" if slot_id[3] != "A" else "B").join((slot_id[:3], slot_id[4:]))
        assert not signer.valid_id(flipped)
        assert not Signer(b"x" * 32).valid_id(slot_id)  # another install's secret
    for junk in ("", "..", "../secret", "a" * 35, "a" * 36, "%2e%2e"):
        assert not signer.valid_id(junk)


def test_put_tokens_bind_the_slot_and_expire() -> None:
    signer = Signer(SECRET)
    token = signer.put_token("id", "a.png", 10, "image/png", 1000)
    assert signer.check_put(token, "id", "a.png", 10, "image/png", 999) is None
    assert signer.check_put(token, "id", "a.png", 10, "image/png", 1001) == "expired"
    assert signer.check_put(token, "id", "a.png", 11, "image/png", 999) == "forged"
    assert signer.check_put(token, "id", "a.png", 10, "text/html", 999) == "forged"
    assert signer.check_put(token, "id2", "a.png", 10, "image/png", 999) == "forged"
    assert signer.check_put("2000." + token.split(".")[1], "id", "a.png", 10, "image/png", 999) == "forged"
    assert signer.check_put("", "id", "a.png", 10, "image/png", 0) == "forged"


def test_file_names_are_made_safe() -> None:
    assert safe_filename("../../etc/passwd") == "_.._etc_passwd"
    assert safe_filename("a\\b:c\x00d\ne.txt") == "a_b_c_d_e.txt"
    assert safe_filename(".htaccess") == "htaccess"
    assert safe_filename("   ") == "file"
    long = safe_filename("x" * 500 + ".jpeg")
    assert len(long) <= 128 and long.endswith(".jpeg")
    assert safe_filename("Grüße.png") == "Grüße.png"


def test_content_disposition_quotes_any_name() -> None:
    value = content_disposition('evil"; filename="x.html', "image/png")
    assert value.startswith('inline; filename="evil__ filename__x.html"')
    assert "filename*=UTF-8''evil%22%3B%20filename%3D%22x.html" in value
    assert content_disposition("a.html", "text/html").startswith("attachment;")
    assert content_disposition("a.svg", "image/svg+xml").startswith("attachment;")
    assert "filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt" in content_disposition("日本.txt", "text/plain")


def test_media_types() -> None:
    assert normal_type(None) == "application/octet-stream"
    assert normal_type("Image/PNG; charset=x") == "image/png"
    assert normal_type("not a type") is None
    assert normal_type("text/html\r\nX: y") is None
    assert type_allowed("image/png", [])
    assert type_allowed("image/png", ["image/*"])
    assert not type_allowed("text/html", ["image/*", "application/pdf"])


def test_size_and_total_quotas() -> None:
    ledger = Ledger(limits(quota_files=2, quota_bytes=1500))
    refusal = ledger.check("a@x", 1001, 0)
    assert refusal is not None and refusal.too_large == 1000 and refusal.condition == "not-acceptable"
    ledger.add("a@x", "1", 0, 900)
    refusal = ledger.check("a@x", 700, 0)
    assert refusal is not None and refusal.condition == "not-allowed" and "1500 bytes" in refusal.text
    assert ledger.check("a@x", 600, 0) is None
    ledger.add("a@x", "2", 0, 600)
    refusal = ledger.check("a@x", 1, 0)
    assert refusal is not None and "2 files" in refusal.text
    ledger.remove("a@x", "1")
    assert ledger.check("a@x", 1, 0) is None
    assert ledger.check("b@x", 1000, 0) is None  # per user


def test_daily_quota_says_when_to_retry() -> None:
    ledger = Ledger(limits(daily_bytes=1000, daily_files=3))
    ledger.add("a@x", "1", 100, 400)
    ledger.add("a@x", "2", 200, 400)
    refusal = ledger.check("a@x", 300, 300)
    assert refusal is not None and refusal.condition == "resource-constraint" and refusal.type == "wait"
    assert refusal.retry_at == 100 + DAY
    assert ledger.check("a@x", 300, 100 + DAY + 1) is None  # the first file left the window
    ledger.add("a@x", "3", 250, 1)
    refusal = ledger.check("a@x", 1, 300)
    assert refusal is not None and "3 files" in refusal.text and refusal.retry_at == 100 + DAY


def test_slot_rate_per_user_and_put_rate_per_address() -> None:
    ledger = Ledger(limits(slots_per_minute=2))
    ledger.note_slot("a@x", 0)
    ledger.note_slot("a@x", 1)
    refusal = ledger.check("a@x", 1, 2)
    assert refusal is not None and refusal.retry_at == 60 and "2 a minute" in refusal.text
    assert ledger.check("a@x", 1, 61) is None
    window = RateWindow(2)
    assert window.allow("1.2.3.4", 0) and window.allow("1.2.3.4", 1)
    assert not window.allow("1.2.3.4", 2)
    assert window.allow("5.6.7.8", 2)
    assert window.allow("1.2.3.4", 61)
