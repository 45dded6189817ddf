"""Personal data is redacted before captured traffic is stored (issue #13): real-looking
support messages, each kind in several formats, and the numbers a support bot needs kept."""

from __future__ import annotations

import pytest

from tierwise_common.redaction import CARD, EMAIL, IBAN, PHONE, iban_ok, luhn_ok, redact, redact_json


@pytest.mark.parametrize("text, secret, placeholder", [
    ("Please write to john.doe+bank@example.co.uk about it", "john.doe+bank@example.co.uk", EMAIL),
    ("my mail is MARIA_GARCIA@correo-empresa.es.", "MARIA_GARCIA@correo-empresa.es", EMAIL),
    ("Call me on +44 20 7946 0958 after 5pm", "+44 20 7946 0958", PHONE),
    ("my phone: 020 7946 0958", "020 7946 0958", PHONE),
    ("reach me at (555) 123-4567", "(555) 123-4567", PHONE),
    ("US cell 555-123-4567 thanks", "555-123-4567", PHONE),
    ("Mon numéro: 06 12 34 56 78", "06 12 34 56 78", PHONE),
    ("DE +49 30 12345678 or 0049301234567", "+49 30 12345678", PHONE),
    ("my card 4111 1111 1111 1111 was declined", "4111 1111 1111 1111", CARD),
    ("card number 5500-0000-0000-0004 expired", "5500-0000-0000-0004", CARD),
    ("Amex 378282246310005 is blocked", "378282246310005", CARD),
    ("refund to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32", IBAN),
    ("IBAN: DE89370400440532013000.", "DE89370400440532013000", IBAN),
    ("FR1420041010050500013M02606 is my account", "FR1420041010050500013M02606", IBAN),
])
def test_each_kind_is_replaced(text: str, secret: str, placeholder: str) -> None:
    clean, count = redact(text)
    assert secret not in clean and placeholder in clean and count >= 1, clean


@pytest.mark.parametrize("text", [
    "Order #123456789 for $1,250.00 on 2024-03-15 at 14:30",
    "I paid 49.99 EUR on 12/05/2023, reference 2024 1500",
    "account ending 4321, transaction 7731, amount 1 000 000",
    "tracking number 1Z999AA10123456784 and version 10.0.1.5",
    "not a card (bad checksum): 4111 1111 1111 1112",
    "What is the exchange rate for 250 GBP to EUR today?",
])
def test_what_a_support_bot_needs_survives(text: str) -> None:
    assert redact(text) == (text, 0)


def test_a_message_with_everything_counts_each() -> None:
    text = ("Hi, I'm Ana (ana.lopez@mail.com, +34 612 345 678). Card 4111-1111-1111-1111 was charged "
            "twice; refund to ES91 2100 0418 4502 0005 1332. Order 88812 on 2024-01-02.")
    clean, count = redact(text)
    assert count == 4
    assert clean == (f"Hi, I'm Ana ({EMAIL}, {PHONE}). Card {CARD} was charged twice; refund to {IBAN}. "
                     "Order 88812 on 2024-01-02.")


def test_json_bodies_are_redacted_everywhere_and_not_mutated() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "mail bob@example.org"},
                                          {"role": "user", "content": [{"type": "text", "text": "card 4111111111111111"}]}],
            "max_tokens": 16}
    clean, count = redact_json(body)
    assert count == 2 and clean["max_tokens"] == 16 and clean["model"] == "auto"
    assert clean["messages"][0]["content"] == f"mail {EMAIL}"
    assert clean["messages"][1]["content"][0]["text"] == f"card {CARD}"
    assert body["messages"][0]["content"] == "mail bob@example.org"


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")
    # wrong check digits: not an IBAN (its digit groups may still be taken for a phone number)
    assert IBAN not in redact("GB00 WEST 1234 5698 7654 32")[0]
