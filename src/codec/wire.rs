//! Bounds-checked primitives of the MQTT wire format (variable byte integer, two-byte
//! lengths, UTF-8 strings, binary data). Every read in the decoder goes through here.
