"""Broker simulators: each broker's API, served on loopback, written from the broker's docs."""

#: Simulator name -> "module:Class". Loaded lazily so one simulator's import never breaks another.
SIMULATORS = {
    "kite": "brokers.simulators.kite:KiteSimulator",
    "angel": "brokers.simulators.angel:AngelSimulator",
    "fyers": "brokers.simulators.fyers:FyersSimulator",
    "dxtrade": "brokers.simulators.dxtrade:DXtradeSimulator",
    "matchtrade": "brokers.simulators.matchtrade:MatchTraderSimulator",
}


def simulator_class(name: str):
    import importlib

    try:
        module_name, class_name = SIMULATORS[name].split(":")
    except KeyError:
        raise LookupError(f"Unknown simulator {name!r}; choose from {sorted(SIMULATORS)}") from None
    return getattr(importlib.import_module(module_name), class_name)
