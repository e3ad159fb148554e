from .accounts import BrokerAccount, BrokerSession, ConnectionState
from .instruments import Instrument

__all__ = ["BrokerAccount", "BrokerSession", "ConnectionState", "Instrument"]
