//! proptest round trips (filled next).
