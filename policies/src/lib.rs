//! Policies and learners (candle): actor/critics, SAC/Cal-QL/WSRL/RLPD, replay buffer, checkpoints.
//!
//! This crate is a placeholder in the workspace foundation; its issue fills it.
