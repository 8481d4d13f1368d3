//! Manual halts (emergency stops).
