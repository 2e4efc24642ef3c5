//! Request smuggling: raw bytes in, and what the dyno receives — never two
//! requests for one.
