"""Phone numbers and resident registration numbers are masked for logs and non-PII roles."""

from __future__ import annotations

import pytest

from bot.masking import mask_phone, mask_pii, mask_rrn


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+821012345678", "+82 10-****-5678"),
        ("010-1234-5678", "+82 10-****-5678"),
        ("+8222101100", "+82 2-***-1100"),
        ("12345", "*2345"),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


def test_mask_rrn() -> None:
    assert mask_rrn("900101-1234567") == "900101-1******"
    assert mask_rrn("0503154123456") == "050315-4******"


def test_mask_pii_in_free_text() -> None:
    text = "연락처 010-1234-5678, 집 02-2100-1000, +82 10 9876 5432, 주민번호 900101-2345678 입니다"
    masked = mask_pii(text)
    assert masked == "연락처 010-****-5678, 집 02-****-1000, +82 10 **** 5432, 주민번호 900101-2****** 입니다"
    for secret in ("1234-5678", "2100-1000", "9876", "2345678"):
        assert secret not in masked


def test_mask_pii_leaves_other_numbers_alone() -> None:
    text = "접수번호 2026-000871, 3시 15분, 100번지"
    assert mask_pii(text) == text


# --- issue 18: the variants that passed unmasked -----------------------------------------------

VARIANTS = [
    ("０１０－９８７６－５４３２", "9876"),          # full-width digits and dash
    ("010–9876–5432", "9876"),                       # en dashes
    ("010—9876—5432", "9876"),                       # em dashes
    ("(010)9876-5432", "9876"),
    ("010 9876 5432", "9876"),                       # spaced groups
    ("0 1 0 9 8 7 6 5 4 3 2", "9 8 7 6"),
    ("010 - 9876 - 5432", "9876"),
    ("01098765432", "9876"),
    ("+1 415 555 2671", "415 555"),                   # foreign numbers
    ("+44 20 7946 0958", "7946"),
    ("+81 3-1234-5678", "1234"),
    ("９００１０１－１２３４５６７", "２３４５６７"),  # RRN, full-width
    ("900101 1234567", "234567"),
]


@pytest.mark.parametrize(("raw", "secret"), VARIANTS)
def test_variants_are_masked(raw: str, secret: str) -> None:
    masked = mask_pii(f"제 번호는 {raw} 이에요")
    assert secret not in masked, masked
    assert "*" in masked


@pytest.mark.parametrize(("raw", "_secret"), VARIANTS)
def test_full_masking_leaves_no_digit_of_the_number(raw: str, _secret: str) -> None:
    masked = mask_pii(f"제 번호는 {raw} 이에요", full=True)
    assert not any(c.isdigit() for c in masked), masked


def test_dates_tickets_amounts_and_coordinates_stay() -> None:
    text = "2026-12-06 10:00, 접수번호 2026-000871, 1,000,000원, 37.566295, 126.977945, 3번 출구"
    assert mask_pii(text) == text
