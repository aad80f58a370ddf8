//! Network namespace fixtures (filled in with the many-clients tests).
