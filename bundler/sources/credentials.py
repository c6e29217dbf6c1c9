"""Registry mirror credentials (password_env or password_file, read when needed, never logged) and the hints
for what goes wrong with them: a refused login, a plain-HTTP mirror spoken to in TLS, a TLS failure."""

from __future__ import annotations

import os
import ssl
from typing import Optional

from bundler.spec import RegistryMirror, password_file_problem
from contract.errors import Error

# what OpenSSL reports when the server answers a TLS ClientHello in plain HTTP (the reason code differs
# across OpenSSL versions: 1.1/3.0 WRONG_VERSION_NUMBER, 3.2+ also PACKET_LENGTH_TOO_LONG / RECORD_LAYER_FAILURE)
PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                                "HTTP_REQUEST"})


def _where(rule: RegistryMirror) -> str:
    return f"mirrors.registries (from: {rule.from_})"


def password(rule: RegistryMirror, host: str) -> str:
    """The rule's password ("" when it names none), read now from its environment variable or file."""
    what = f"logging in to {host} as {rule.username}"
    if rule.password_env:
        value = os.environ.get(rule.password_env)
        if value is None:
            raise Error(f"environment variable {rule.password_env} is not set", context=what,
                        hint=f"export {rule.password_env}=<password> (named by {_where(rule)}.password_env)")
        return value
    path = rule.password_path()
    if path is None:
        return ""
    problem = password_file_problem(rule)
    if problem is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problem = f"password file {path} is not readable: {getattr(e, 'strerror', None) or e}"
    if problem is not None:
        raise Error(problem, context=what,
                    hint=f"{_where(rule)}.password_file must name a readable file holding the password")
    return text.rstrip("\r\n")  # one line, as sites hand it out; the trailing newline is not part of it


def refused_hint(rule: Optional[RegistryMirror]) -> str:
    """What to check when a registry refuses us: the username sent and where its password came from."""
    if rule is None:
        return ("no mirror rule applies, so no credentials were sent: a private repository needs a "
                "mirrors.registries rule with username and password_env or password_file")
    if not rule.username:
        return f"no credentials were sent: set username and password_env or password_file on {_where(rule)}"
    source = rule.password_source
    if source is None:
        return f"user {rule.username!r} was sent with an empty password: set password_env or password_file " \
               f"on {_where(rule)}"
    return f"user {rule.username!r} was sent with the password from {source} ({_where(rule)}): check that " \
           "both are right for this registry and that the user may pull the repository"


def ssl_reason(exc: BaseException) -> Optional[str]:
    """The OpenSSL reason code (e.g. WRONG_VERSION_NUMBER) of the ssl.SSLError inside requests' wrappers."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError) and getattr(e, "reason", None):
            return e.reason
        todo += [x for x in (*getattr(e, "args", ()), getattr(e, "reason", None), e.__cause__, e.__context__)
                 if isinstance(x, BaseException)]
    return None


def tls_error(exc: BaseException, url: str, rule: Optional[RegistryMirror], what: str) -> Error:
    """The Error for a TLS failure talking to a registry, with the hint its cause calls for."""
    reason = ssl_reason(exc)
    if reason in PLAIN_HTTP_REASONS:
        hint = (f"set insecure: true for this mirror ({_where(rule)})" if rule is not None else
                "the registry does not speak TLS: to pull from it in plain HTTP, add a mirrors.registries rule "
                "for it with insecure: true")
        return Error(f"{url}: the server answered in plain HTTP, not TLS ({reason})", context=what, hint=hint)
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        return Error(f"{url}: the registry's TLS certificate is not trusted: {exc}", context=what,
                     hint="add its CA to the system trust store or REQUESTS_CA_BUNDLE")
    return Error(f"{url}: TLS failed ({reason or type(exc).__name__}): {exc}", context=what,
                 hint="check the registry's host and port, and that it serves TLS")
