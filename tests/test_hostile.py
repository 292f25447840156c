"""The pieces of the gRPC edge that hostile input meets, one by one: message
bounds, quoting, identifiers, label limits, and the answer an unexpected
exception gets. (tests/e2e/test_e2e_hostile.py and test_e2e_fuzz.py send
the same things through a real daemon.)"""

from __future__ import annotations

import errno

import grpc
import pytest

from pycontainerd.pkg import errdefs
from pycontainerd.core.service import MAX_ERROR_MESSAGE, answer_for, bounded_message
from pycontainerd.pkg.identifiers import validate as validate_identifier
from pycontainerd.pkg.labels import MAX_LABELS, MAX_LABELS_BYTES, check_label_limits, validate_labels


def wire_size(text: str) -> int:
    # grpc-message is percent-encoded: bytes outside printable ASCII (and '%') take three
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode())


@pytest.mark.parametrize("text", ["a" * (1 << 20), "é" * 100_000, "%" * 10_000, "\x00" * 5000, "牛\U0001f600" * 9000])
def test_long_messages_are_cut_to_the_bound_keeping_their_end(text):
    message = f'namespace "{text}": not found'
    cut = bounded_message(message)
    assert wire_size(cut) <= MAX_ERROR_MESSAGE
    assert cut.startswith('namespace "')
    assert cut.endswith('": not found')  # the class survives: clients read it from the end
    assert " ... " in cut


def test_short_messages_are_left_alone():
    message = "lease \"l1\": not found"
    assert bounded_message(message) is message
    exact = "x" * MAX_ERROR_MESSAGE
    assert bounded_message(exact) == exact


def test_cut_quotes_a_bounded_prefix_and_says_how_much_is_left_out():
    assert errdefs.cut("abc") == "abc"
    assert errdefs.cut("a" * 300) == "a" * 256 + "...(44 more characters)"


def test_identifiers_quote_go_style_and_count_bytes():
    with pytest.raises(errdefs.InvalidArgument) as info:
        validate_identifier("a b")
    assert str(info.value) == 'identifier "a b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument'
    # 40 characters, 80 bytes: too long, as Go's len() counts
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum length"):
        validate_identifier("é" * 40)
    with pytest.raises(errdefs.InvalidArgument) as info:
        validate_identifier("x" * 100_000)
    assert len(str(info.value)) < 400
    # Python's $ would let a trailing newline through
    with pytest.raises(errdefs.InvalidArgument, match="must match"):
        validate_identifier("abc\n")
    validate_identifier("k8s.io")


def test_labels_are_checked_in_bytes_as_containerd_does():
    validate_labels({"k": "v" * 4095})
    with pytest.raises(errdefs.InvalidArgument) as info:
        validate_labels({"k": "é" * 2048})  # 2048 characters, 4097 bytes
    assert str(info.value) == "label key and value greater than maximum size (4096 bytes), key: k: invalid argument"
    with pytest.raises(errdefs.InvalidArgument) as info:
        validate_labels({"0123456789abcdef": "v" * 5000})
    assert "key: 0123456789: " in str(info.value)  # the key is cut to 10 bytes


def test_per_object_label_limits():
    check_label_limits({f"k{i}": "v" for i in range(MAX_LABELS)})
    with pytest.raises(errdefs.InvalidArgument, match=f"too many labels: {MAX_LABELS + 1}"):
        check_label_limits({f"k{i}": "v" for i in range(MAX_LABELS + 1)})
    with pytest.raises(errdefs.InvalidArgument, match="labels too large"):
        check_label_limits({f"k{i}": "v" * 4000 for i in range(MAX_LABELS_BYTES // 4000 + 1)})
    with pytest.raises(errdefs.InvalidArgument, match="too many update paths"):
        check_label_limits({}, [f"labels.k{i}" for i in range(MAX_LABELS + 1)])


def test_unexpected_exceptions_are_answered_without_python_internals():
    code, message = answer_for(KeyError("secret internal key"))
    assert (code, message) == (grpc.StatusCode.UNKNOWN, "internal error: see the daemon's log")
    err = FileNotFoundError(errno.ENOENT, "No such file or directory", "/var/lib/pycontainerd/secret")
    code, message = answer_for(err)
    assert code == grpc.StatusCode.UNKNOWN
    assert message == "filesystem operation failed: no such file or directory"
    assert answer_for(errdefs.NotFound("lease \"x\"")) == (grpc.StatusCode.NOT_FOUND, 'lease "x": not found')
    assert answer_for(NotImplementedError("Method not implemented!"))[0] == grpc.StatusCode.UNIMPLEMENTED
