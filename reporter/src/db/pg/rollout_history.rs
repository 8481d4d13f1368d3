//! The releases each channel rolled out.
