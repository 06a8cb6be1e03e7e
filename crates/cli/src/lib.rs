//! The `ctr` client's parts: the stack as the client sees it (its `CTR_*` settings), the demo,
//! the event receiver and token inspection. The binary (`src/main.rs`) is their command line.

pub mod api;
pub mod demo;
pub mod listen;
pub mod token;
