//! Rate limits (issue in progress): the GCRA arithmetic is here and tested;
//! the shared-memory and table backends, rules and the PostgREST
//! pre-request hook build on it.

pub mod gcra;
