"""Phone numbers and resident registration numbers are masked for logs and non-PII roles."""

from __future__ import annotations

import pytest

from crm_store.masking import mask_phone, mask_pii, mask_rrn


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
