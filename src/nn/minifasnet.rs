//! MiniFASNet placeholder (being written).
