//! broker (to be written).
