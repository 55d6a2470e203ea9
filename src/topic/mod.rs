//! topic (to be written).
