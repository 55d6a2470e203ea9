//! retained (to be written).
