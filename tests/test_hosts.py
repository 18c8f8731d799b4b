"""Which hosts count as this machine, where a password may go unencrypted (newsletter.hosts)."""

import pytest

from newsletter.hosts import is_loopback


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "LocalHost", "127.0.0.1", "127.9.8.7",
                                  "::1", "0:0:0:0:0:0:0:1", "::1%lo"])
def test_this_machine_is_accepted(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["", "localhost.", "localhost..", ".localhost", "localhost.example",
                                  "mail.localhost.example",
                                  "127.1", "0177.0.0.1", "0x7f.0.0.1", "2130706433", "[::1]", "[127.0.0.1]",
                                  " localhost", "localhost ", "127.0.0.1 ", "\t::1", "localhost\x00", "0.0.0.0",
                                  "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "128.0.0.1", "127.0.0.1.nip.io",
                                  "xn--localhost-"])
def test_what_is_not_clearly_this_machine_is_refused(host):
    assert not is_loopback(host)
