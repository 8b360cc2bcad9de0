#!/usr/bin/env python3
"""A real SMTP server for the test suites (aiosmtpd), writing every accepted message to a folder.

For each message it writes `<dir>/<seq>.eml` (the raw message) and `<dir>/<seq>.json`: envelope,
headers, text and HTML bodies as Python's own `email` package parses them, and every
`text/calendar` part parsed by the `icalendar` package, so the Rust tests check what independent
parsers read, not what SecCollab meant to write.

  smtp_sink.py --dir D [--port P] [--delay SECONDS] [--reject-rcpt ADDR]...
               [--tls starttls|tls --ca-out FILE] [--auth USER:PASSWORD]

With `--tls` it makes a throw-away CA and a certificate for 127.0.0.1 (the `trustme` package),
writes the CA to `--ca-out` for the client to trust, and requires STARTTLS (`starttls`) or speaks
TLS from the first byte (`tls`). With `--auth` it requires AUTH PLAIN/LOGIN with those
credentials (over TLS only). `--delay` holds each recipient (RCPT TO) for that long before answering, as a slow server or a
slow recipient check would, and marks the transaction in progress with a file `<dir>/inflight`
while it waits: a test can kill the sender mid-transaction, before the message data was sent.
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import signal
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

try:
    import icalendar
except ImportError:  # pragma: no cover
    icalendar = None


def parse_ics(data: bytes):
    cal = icalendar.Calendar.from_ical(data)
    out = {"method": str(cal.get("METHOD", "")), "events": []}
    for ev in cal.walk("VEVENT"):
        atts = ev.get("ATTENDEE", [])
        if not isinstance(atts, list):
            atts = [atts]
        out["events"].append({
            "uid": str(ev.get("UID")),
            "sequence": int(ev.get("SEQUENCE", 0)),
            "summary": str(ev.get("SUMMARY", "")),
            "description": str(ev.get("DESCRIPTION", "")),
            "status": str(ev.get("STATUS", "")),
            "dtstart": ev.decoded("DTSTART").isoformat(),
            "dtend": ev.decoded("DTEND").isoformat(),
            "organizer": str(ev.get("ORGANIZER", "")),
            "attendees": [{"address": str(a), "partstat": str(a.params.get("PARTSTAT", "")),
                           "cn": str(a.params.get("CN", ""))} for a in atts],
        })
    return out


class Sink:
    def __init__(self, folder, delay, reject):
        self.folder = folder
        self.delay = delay
        self.reject = set(reject)
        existing = [int(f.split(".")[0]) for f in os.listdir(folder) if f.endswith(".json")]
        self.counter = itertools.count(max(existing, default=0) + 1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.delay:
            marker = os.path.join(self.folder, "inflight")
            open(marker, "w").close()
            try:
                await asyncio.sleep(self.delay)
            finally:
                try:
                    os.remove(marker)
                except FileNotFoundError:
                    pass
        if address in self.reject:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        info = {
            "received_at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "headers": [[k, str(v)] for k, v in msg.items()],
            "raw_headers": raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace"),
            "message_id": str(msg.get("Message-ID", "")),
            "subject": str(msg.get("Subject", "")),
            "to": str(msg.get("To", "")),
            "from": str(msg.get("From", "")),
            "text": None, "html": None, "calendars": [], "attachments": [],
        }
        for part in msg.walk():
            ctype = part.get_content_type()
            if part.is_multipart():
                continue
            if ctype == "text/plain" and info["text"] is None and not part.get_filename():
                info["text"] = part.get_content()
            elif ctype == "text/html" and info["html"] is None:
                info["html"] = part.get_content()
            elif ctype == "text/calendar":
                data = part.get_payload(decode=True)
                info["attachments"].append({"filename": part.get_filename(), "content_type": str(part.get("Content-Type"))})
                info["calendars"].append(parse_ics(data) if icalendar else {"raw": data.decode()})
        n = next(self.counter)
        base = os.path.join(self.folder, f"{n:06d}")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(raw)
        os.replace(base + ".eml.tmp", base + ".eml")
        with open(base + ".json.tmp", "w") as f:
            json.dump(info, f)
        os.replace(base + ".json.tmp", base + ".json")
        return "250 2.0.0 accepted"


class Authenticator:
    def __init__(self, user, password):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, handled=False)


class QuietController(Controller):
    def __init__(self, handler, starttls_context=None, authenticator=None, **kw):
        self.starttls_context = starttls_context
        self.authenticator = authenticator
        # With implicit TLS aiosmtpd does not know the socket is encrypted, so it would never
        # offer AUTH if told to require TLS for it.
        self.implicit_tls = kw.get("ssl_context") is not None
        super().__init__(handler, **kw)

    def factory(self):
        extra = {}
        if self.starttls_context is not None:
            extra.update(tls_context=self.starttls_context, require_starttls=True)
        if self.authenticator is not None:
            extra.update(authenticator=self.authenticator, auth_required=True,
                         auth_require_tls=not self.implicit_tls)
        return SMTP(self.handler, data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=True, timeout=30, **extra)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--reject-rcpt", action="append", default=[])
    ap.add_argument("--tls", choices=["starttls", "tls"])
    ap.add_argument("--ca-out")
    ap.add_argument("--auth")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    port = a.port
    if port == 0:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    kw = {}
    if a.tls:
        import ssl
        import trustme
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(a.ca_out)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        if a.tls == "starttls":
            kw["starttls_context"] = ctx
        else:
            kw["ssl_context"] = ctx
    if a.auth:
        user, _, password = a.auth.partition(":")
        kw["authenticator"] = Authenticator(user, password)
    ctl = QuietController(Sink(a.dir, a.delay, a.reject_rcpt), hostname="127.0.0.1", port=port, **kw)
    ctl.start()
    print(f"listening on {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (ctl.stop(), sys.exit(0)))
    try:
        signal.pause()
    except KeyboardInterrupt:
        ctl.stop()


if __name__ == "__main__":
    main()
