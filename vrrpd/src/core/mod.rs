//! Sans-IO VRRP state machine (in progress).
