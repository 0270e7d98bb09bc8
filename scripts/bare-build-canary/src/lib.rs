//! Empty: only the build script matters.
