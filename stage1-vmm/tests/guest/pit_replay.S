/* Tiny guest of stage1-vmm/tests/kvm_tiny.rs (`pit_drops_ticks_missed_while_interrupts_are_off`):
 * does the in-kernel PIT replay the ticks it could not deliver while interrupts were off?
 * Counts the PIT's ~1 kHz interrupts (through the PIC) in a window of W TSC cycles with
 * interrupts on, then in an eighth of one right after a window with them off, and prints both
 * in hex ("PIT <on> <after>") before resetting through the i8042. The test holds the bytes;
 * after an edit, rebuild them with:
 *   as --32 pit_replay.S -o pit.o && ld -m elf_i386 -Ttext=0x100000 --oformat binary pit.o -o pit.bin
 */
        .code32
        .set IDT, 0x8000
        .set COUNT, 0x9000
        .set W, 400000000            /* TSC cycles per window */
        .globl _start
_start:
        cli
        mov $0x7000, %esp
        /* IDT gate for vector 0x20: handler, this CS, 32-bit interrupt gate */
        mov $handler, %eax
        mov %ax, IDT + 0x20*8
        mov %cs, %bx
        mov %bx, IDT + 0x20*8 + 2
        movw $0x8e00, IDT + 0x20*8 + 4
        shr $16, %eax
        mov %ax, IDT + 0x20*8 + 6
        lidt idtr
        movl $0, COUNT
        /* PICs: master vectors 0x20-0x27, only IRQ0 unmasked; slave masked */
        mov $0x11, %al; out %al, $0x20
        mov $0x20, %al; out %al, $0x21
        mov $0x04, %al; out %al, $0x21
        mov $0x01, %al; out %al, $0x21
        mov $0xfe, %al; out %al, $0x21
        mov $0xff, %al; out %al, $0xa1
        /* PIT channel 0, mode 2, 1193 (~1 kHz) */
        mov $0x34, %al; out %al, $0x43
        mov $0xa9, %al; out %al, $0x40
        mov $0x04, %al; out %al, $0x40
        /* window 1: interrupts on */
        sti
        mov COUNT, %esi
        mov $W, %ebx; call wait
        mov COUNT, %edi
        sub %esi, %edi              /* edi = ticks taken in one window */
        /* window 2: interrupts off */
        cli
        mov $W, %ebx; call wait
        /* window 3: interrupts on, an eighth of a window */
        mov COUNT, %esi
        sti
        mov $(W/8), %ebx; call wait
        cli
        mov COUNT, %ebp
        sub %esi, %ebp              /* ebp = ticks taken after the gap */
        /* print "PIT <edi> <ebp>\n" in hex */
        mov $'P', %al; call putc
        mov $'I', %al; call putc
        mov $'T', %al; call putc
        mov $' ', %al; call putc
        mov %edi, %ebx; call puthex
        mov $' ', %al; call putc
        mov %ebp, %ebx; call puthex
        mov $'\n', %al; call putc
        mov $0xfe, %al; out %al, $0x64     /* i8042 reset */
1:      hlt
        jmp 1b

/* wait: spins until %ebx TSC cycles have passed (clobbers eax, ecx, edx) */
wait:
        rdtsc
        mov %eax, %ecx
2:      rdtsc
        sub %ecx, %eax
        cmp %ebx, %eax
        jb 2b
        ret
putc:   mov $0x3f8, %dx
        out %al, %dx
        ret
puthex: mov $8, %ecx
4:      rol $4, %ebx
        mov %bl, %al
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 5f
        add $7, %al
5:      push %ecx
        call putc
        pop %ecx
        loop 4b
        ret
handler:
        push %eax
        incl COUNT
        mov $0x20, %al
        out %al, $0x20
        pop %eax
        iret
        .align 4
idtr:   .word 0x100*8 - 1
        .long IDT
