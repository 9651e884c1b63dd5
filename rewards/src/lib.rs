//! Success classifiers, keypoint affordance scorer and reward fusion.
//!
//! This crate is a placeholder in the workspace foundation; its issue fills it.
