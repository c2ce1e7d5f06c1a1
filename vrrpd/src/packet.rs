//! VRRP packet codec (in progress).
