import hashlib
import hmac

from pipeline.security import (
    admin_key_matches,
    generate_client_key,
    hash_key,
    key_prefix,
    verify_key,
)


def test_generated_keys_are_unique_and_carry_their_prefix():
    keys = [generate_client_key() for _ in range(200)]
    assert len({k.key for k in keys}) == 200
    for issued in keys:
        assert issued.key.startswith(f"msk_{issued.prefix}_")
        assert key_prefix(issued.key) == issued.prefix
        assert len(issued.key) > 50


def test_repr_hides_the_key():
    issued = generate_client_key()
    assert issued.key not in repr(issued)


def test_hash_is_hmac_sha256_under_the_pepper():
    expected = hmac.new(b"pepper", b"the-key", hashlib.sha256).hexdigest()
    assert hash_key("the-key", "pepper") == expected
    assert hash_key("the-key", "other") != expected


def test_verify_accepts_only_the_right_key_and_pepper():
    issued = generate_client_key()
    stored = hash_key(issued.key, "pepper")
    assert verify_key(issued.key, stored, "pepper")
    assert not verify_key(issued.key + "x", stored, "pepper")
    assert not verify_key(issued.key, stored, "other-pepper")
    # An unknown client (no stored hash) never verifies, even for the
    # hash of the empty key that the constant-time path compares with.
    assert not verify_key("", None, "pepper")
    assert not verify_key(issued.key, None, "pepper")


def test_malformed_keys_have_no_prefix():
    for key in ["", "msk", "msk__secret", "abc_123456789012_x", "msk_short_x"]:
        assert key_prefix(key) is None


def test_admin_key_comparison():
    assert admin_key_matches("secret-admin", "secret-admin")
    assert not admin_key_matches("secret-admi", "secret-admin")
    assert not admin_key_matches(None, "secret-admin")
    assert not admin_key_matches("", "")
