"""One coverage-guided fuzz target under atheris (libFuzzer): `python -m tests.fuzz.target NAME
-runs=N`. NAME is frames, hello, config or vnet; every input goes through the matching
tests/fuzz/properties.check_* and a failed property is a crash (libFuzzer stops and prints it).
tests/fuzz/run.py runs all four and counts the inputs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from tests.fuzz import properties
    from vpn import protocol, wirejson  # noqa: F401  (instrumented: their branches guide it)
    from vpn.iface import vnet  # noqa: F401


def _any_value(fdp: atheris.FuzzedDataProvider) -> Any:
    kind = fdp.ConsumeIntInRange(0, 6)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat()
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    if kind == 3:
        return [fdp.ConsumeUnicodeNoSurrogates(8) for _ in range(fdp.ConsumeIntInRange(0, 20))]
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return None
    return {fdp.ConsumeUnicodeNoSurrogates(4): fdp.ConsumeInt(2)}


def _message(keys: tuple[str, ...], data: bytes) -> bytes:
    """Odd first byte: the raw bytes. Even: a JSON object of `keys` built from the rest."""
    if not data or data[0] & 1:
        return data[1:]
    fdp = atheris.FuzzedDataProvider(data[1:])

    def pick(kind: str) -> Any:
        if kind in ("present", "extra"):
            return fdp.ConsumeBool()
        if fdp.ConsumeBool():
            return fdp.PickValueInList(properties.VOCABULARY[kind])
        return _any_value(fdp)

    return properties.json_message(keys, pick)


TARGETS: dict[str, Callable[[bytes], object]] = {
    "frames": properties.check_frames,
    "hello": lambda data: properties.check_hello(_message(properties.HELLO_KEYS, data)),
    "config": lambda data: properties.check_config(_message(properties.CONFIG_KEYS, data)),
    "vnet": properties.check_vnet,
}


def main() -> None:
    name, *libfuzzer_args = sys.argv[1:]
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
