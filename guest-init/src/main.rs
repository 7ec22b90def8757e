//! `/init`: PID 1 of a pod (see the `guest_init` library).

fn main() {
    guest_init::main()
}
