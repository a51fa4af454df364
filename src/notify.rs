//! Gotify notifications. The token travels only in the `X-Gotify-Key` header.
