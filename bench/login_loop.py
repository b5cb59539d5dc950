"""Sequential full logins against a server that is already running: a fixed load to profile it under.

Each login is the ``login`` scenario's (STARTTLS, SCRAM-SHA-1, bind, initial presence and its echo)
followed by a clean close, one after the other; accounts ``user1``..``userN`` with password ``pw``
(``bench/run serve roost --n N --keep`` provisions them). Counting instructions with callgrind on the
server repeats to well under 1 % when each run starts from a copy of the same data directory, where
wall-clock figures on a shared machine do not:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/x.out \\
        .venv/bin/python -m roost.cli.main --config DIR/roost/roost.toml run &
    .venv/bin/python -m bench.login_loop PORT 60           # warm-up, not counted
    callgrind_control -i on PID
    .venv/bin/python -m bench.login_loop PORT 200
    callgrind_control -d PID; kill PID                     # totals in /tmp/x.out.1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench.xmppload.client import (
    Account,
    CredentialCache,
    Endpoint,
    LoginOptions,
    client_tls_context,
    close,
    login,
)


async def run(port: int, logins: int, users: int, domain: str) -> None:
    endpoint = Endpoint("127.0.0.1", port, domain)
    creds = CredentialCache()
    options = LoginOptions(tls=client_tls_context())
    started = time.perf_counter()
    for n in range(logins):
        session = await login(endpoint, Account(f"user{n % users + 1}", "pw"), f"r{n}", creds, options)
        await close(session)
    print(f"{logins} logins in {time.perf_counter() - started:.2f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("logins", type=int)
    parser.add_argument("--users", type=int, default=50, help="accounts user1..userN to cycle through")
    parser.add_argument("--domain", default="localhost")
    args = parser.parse_args()
    asyncio.run(run(args.port, args.logins, args.users, args.domain))


if __name__ == "__main__":
    main()
