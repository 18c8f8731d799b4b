"""SMTP throughput: our SMTPTransport against raw smtplib, over one connection each.

    .venv/bin/python benchmarks/bench_smtp.py [--messages N] [--rounds R] [--latency-ms L]

A minimal aiosmtpd sink that discards every message runs in a *separate process* on
127.0.0.1, so its CPU time does not compete with the client for the GIL. It reads
DATA in large chunks (see :func:`serve`) so that the client is what is measured,
not aiosmtpd's line-by-line reader, and it offers PIPELINING like most real servers
(Postfix, Exim, Gmail, SES...). Then, in alternating rounds, each over one connection:

(a) raw       ``smtplib.SMTP.sendmail`` of N byte strings built *before* the clock starts
              (smtplib never pipelines);
(b) ours      ``SMTPTransport`` with pipelining off: the same four round trips per
              message as (a), but N ``OutgoingMessage``s personalised from one
              ``PreparedIssue`` *inside* the timed region;
(c) ours+pipe ``SMTPTransport`` as configured by default: MAIL/RCPT/DATA in one write.

The headline ratio is (b)/(a), like for like on the wire (target >= 1.0x).
``--latency-ms`` makes the sink wait that long before answering each group of
commands, a stand-in for the round trip to a remote relay, where (c) matters most.

The issue is the real ``issues/006-global-governance-of-ai.md`` rendered by
``newsletter.render`` when that works, else a generated ~55 KB HTML body. Nothing
leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_MESSAGES = 100_000
FROM = "newsletter@bench.example"


# ---- the sink (child process) -------------------------------------------------------------
def serve(latency: float) -> None:
    """Run an aiosmtpd sink on a free port; print the port; stop when stdin closes.

    aiosmtpd reads DATA one line at a time in Python (~1,000 awaits for a 78 KB
    message), which would make the *server* the thing measured. The sink keeps
    aiosmtpd's command handling but swallows DATA in large chunks up to the
    end-of-data marker and discards it. (It assumes nothing is pipelined right
    behind the final dot, which neither client here does.)
    """
    import asyncio

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class DiscardingSMTP(SMTP):
        async def push(self, status):
            # Simulated round trip: answer only once the client's group of commands is read.
            if latency and not self._reader._buffer:
                await asyncio.sleep(latency)
            await super().push(status)

        async def smtp_DATA(self, arg: str) -> None:
            if not self.envelope.rcpt_tos:
                await self.push("503 Error: need RCPT command")
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            tail = b"\r\n"
            while True:
                chunk = await self._reader.read(1 << 18)
                if not chunk:
                    return
                if b"\r\n.\r\n" in tail + chunk[:5] or b"\r\n.\r\n" in chunk:
                    break
                tail = chunk[-4:]
            self._set_post_data_state()
            await self.push("250 2.0.0 Ok: discarded")

    class Sink:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            responses.insert(-1, "250-PIPELINING")
            return responses

    class FreePortController(Controller):
        def factory(self):
            return DiscardingSMTP(self.handler, **self.SMTP_kwargs)

        def _trigger_server(self):
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    controller = FreePortController(Sink(), hostname="127.0.0.1", port=0, data_size_limit=0)
    controller.start()
    print(controller.port, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        controller.stop()


def start_sink(latency: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency-ms", str(latency * 1000)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit("the SMTP sink did not start")
    return proc, int(line)


# ---- the content --------------------------------------------------------------------------
def rendered_issue():
    """The real issue #6 when the render pipeline works, else a generated one."""
    from newsletter.config import load_settings

    settings = load_settings(root=ROOT, environ={"NEWSLETTER_FROM": FROM})
    source = ROOT / "issues" / "006-global-governance-of-ai.md"
    try:
        from newsletter.render import render_issue

        if source.exists():
            return render_issue(source, settings), settings, f"{source.relative_to(ROOT)} (rendered)"
    except Exception as exc:  # the fallback keeps the benchmark usable while render.py changes
        print(f"(could not render the real issue: {exc}; using generated HTML)", file=sys.stderr)
    return generated_issue(), settings, "generated HTML"


def generated_issue():
    from newsletter.render import RenderedEmail

    para = ("<p style=\"margin:0 0 16px;font-family:Georgia,serif;font-size:17px;line-height:1.6;color:#1f2328\">"
            "Global governance of artificial intelligence asks who sets the rules, in which forum, and how "
            "compliance is verified &mdash; questions on which scholars in Beijing and Washington differ. "
            "<a href=\"https://example.org/articles/{i}\" style=\"color:#9b1c1c\">Read the article</a></p>\n")
    html = ("<!doctype html><html><body><table role=\"presentation\" width=\"100%\"><tr><td>\n"
            + "".join(para.format(i=i) for i in range(150))
            + "<p>Hello %%NAME%% (%%EMAIL%%) &middot; <a href=\"%%UNSUBSCRIBE_URL%%\">Unsubscribe</a></p>\n"
            + "</td></tr></table></body></html>\n")
    text = "\n\n".join("Global governance of AI, paragraph %d." % i for i in range(150))
    text += "\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n"
    return RenderedEmail(slug="bench", number=1, title="Bench", subject="Bench issue", preheader="",
                         html=html, text=text, lang="en", reply_to=None, content_hash="bench" * 12)


def recipients(n: int):
    from newsletter.message import Recipient

    return [Recipient(email=f"reader{i}@example.com", name=f"Reader {i}", token=f"{i:x}.sig{i:012d}")
            for i in range(n)]


# ---- the contestants ------------------------------------------------------------------------
def run_raw(port: int, payloads: list[tuple[str, bytes]]) -> tuple[float, float]:
    c, t = time.process_time(), time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=60)
    smtp.ehlo()
    for to, data in payloads:
        smtp.sendmail(FROM, [to], data)
    smtp.quit()
    return time.perf_counter() - t, time.process_time() - c


def run_ours(port: int, rendered, settings, people, *, pipelining: bool) -> tuple[float, float]:
    from newsletter.message import PreparedIssue
    from newsletter.transports.base import Status
    from newsletter.transports.smtp import SMTPTransport

    c, t = time.process_time(), time.perf_counter()
    prepared = PreparedIssue(rendered=rendered, publication=settings.publication, secret_key="bench-key")
    transport = SMTPTransport("127.0.0.1", port, security="none", envelope_from=FROM, helo_name="bench.local",
                              timeout=60, pipelining=pipelining)
    batch = transport.max_batch
    sent = 0
    with transport:
        for i in range(0, len(people), batch):
            msgs = [prepared.personalise(r) for r in people[i:i + batch]]
            sent += sum(1 for r in transport.send(msgs) if r.status is Status.SENT)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    if sent != len(people) or transport.connections != 1:
        raise SystemExit(f"ours: sent {sent}/{len(people)} over {transport.connections} connections")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help=f"messages per run (1..{MAX_MESSAGES})")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (1..10)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated round trip at the sink (0..200)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    latency = max(0.0, min(args.latency_ms, 200.0)) / 1000
    if args.serve:
        serve(latency)
        return 0
    n = max(1, min(args.messages, MAX_MESSAGES))
    rounds = max(1, min(args.rounds, 10))

    from newsletter.message import PreparedIssue

    rendered, settings, source = rendered_issue()
    people = recipients(n)
    prepared = PreparedIssue(rendered=rendered, publication=settings.publication, secret_key="bench-key")
    payloads = [(r.email, prepared.personalise(r).as_bytes()) for r in people]
    size = statistics.mean(len(d) for _, d in payloads)
    print(f"content: {source}; html {len(rendered.html) / 1024:.1f} KB, message {size / 1024:.1f} KB on the "
          f"wire; {n} messages x {rounds} rounds; latency {latency * 1000:g} ms; python {sys.version.split()[0]}")

    contestants = {
        "(a) raw smtplib.sendmail, pre-built bytes": lambda: run_raw(port, payloads),
        "(b) SMTPTransport, personalised, serial  ": lambda: run_ours(port, rendered, settings, people,
                                                                      pipelining=False),
        "(c) SMTPTransport, personalised, pipelined": lambda: run_ours(port, rendered, settings, people,
                                                                       pipelining=True),
    }
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in contestants}
    proc, port = start_sink(latency)
    try:
        run_raw(port, payloads[: min(20, n)])  # warm-up
        for _ in range(rounds):
            for name, run in contestants.items():
                runs[name].append(run())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

    medians = {}
    for name, results in runs.items():
        walls = [w for w, _ in results]
        cpu = statistics.median(c for _, c in results) / n * 1e6
        medians[name] = statistics.median(walls)
        print(f"{name}: {n / min(walls):7.0f} msg/s best, {n / medians[name]:7.0f} median; "
              f"client CPU {cpu:5.0f} us/msg")
    a, b, c = medians.values()
    print(f"ratio (b)/(a): {a / b:.2f}x  (target >= 1.0x)   ratio (c)/(a): {a / c:.2f}x   [medians]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
