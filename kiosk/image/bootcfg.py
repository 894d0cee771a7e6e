"""Bootloader files as text: GRUB's config and environment block, each slot's kernel arguments.

Boot counting (the Home Assistant OS pattern): the environment holds ``ORDER`` (slots to
try, best first) and per slot ``X_ok`` (1: has a system) and ``X_try`` (boots begun since it
was last marked good). The bootloader takes the first slot in ``ORDER`` that is ok and has
tries left, counts one more try, and boots it; ``kiosk-boot-ok.service`` sets ``X_try=0``
once the agent runs. A slot that fails ``tries`` times in a row is passed over.
"""

from __future__ import annotations

GRUBENV_SIZE = 1024
GRUBENV_HEADER = "# GRUB Environment Block\n"
SLOTS = ("a", "b")
# Partition numbers of the boot partitions (kiosk.image.layout).
BOOT_PARTITION = {"a": 2, "b": 3}


class EnvError(ValueError):
    pass


def initial_env() -> dict[str, str]:
    return {"ORDER": "a b", "a_ok": "1", "a_try": "0", "b_ok": "0", "b_try": "0"}


def render_grubenv(env: dict[str, str]) -> bytes:
    """GRUB's fixed-size block: a header, key=value lines, '#' padding to 1024 bytes."""
    body = GRUBENV_HEADER
    for key, value in env.items():
        if not key or "=" in key or "\n" in key + value:
            raise EnvError(f"cannot store {key!r}={value!r} in a GRUB environment block")
        body += f"{key}={value}\n"
    raw = body.encode()
    if len(raw) > GRUBENV_SIZE:
        raise EnvError("the GRUB environment is larger than its 1024-byte block")
    return raw + b"#" * (GRUBENV_SIZE - len(raw))


def parse_grubenv(raw: bytes) -> dict[str, str]:
    if len(raw) != GRUBENV_SIZE or not raw.startswith(GRUBENV_HEADER.encode()):
        raise EnvError("not a GRUB environment block")
    env = {}
    for line in raw[len(GRUBENV_HEADER):].decode(errors="strict").split("\n"):
        if line.startswith("#") or not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise EnvError(f"malformed line in the GRUB environment: {line!r}")
        env[key] = value
    return env


SERIAL_CONSOLE = {"amd64": "ttyS0,115200", "arm64": "ttyAMA0,115200"}


def kernel_cmdline(arch: str, debug: bool) -> str:
    """What every slot boots with; the slot adds its root and verity hash."""
    # no_timer_check: the kernel's early check of the IO-APIC timer panics an emulated (TCG)
    # unit on a loaded host ("IO-APIC + timer doesn't work!"); real hardware does not need it.
    args = ["ro", "rootfstype=erofs", "systemd.volatile=state", "systemd.gpt_auto=0", "no_timer_check",
            "panic=10", "oops=panic", "sysrq_always_enabled=0", "vt.global_cursor_default=0",
            # the last console is /dev/console: boot messages go to the serial line, not the screen
            "console=tty1", f"console={SERIAL_CONSOLE[arch]}", "loglevel=3", "systemd.show_status=auto"]
    if not debug:
        args.append("quiet")
    return " ".join(args)


def slot_args(hash_offset: int, root_hash: str) -> str:
    """Slot-agnostic: the initramfs opens the root of the slot the bootloader names
    (``kiosk.slot=``), so an update bundle's boot files serve either slot."""
    return f"root=/dev/mapper/root kiosk.verity={hash_offset}:{root_hash}"


def uboot_env(env: dict[str, str]) -> bytes:
    """key=value lines, as U-Boot's ``env import -t`` reads and ``env export -t`` writes them."""
    for key, value in env.items():
        if not key or "=" in key or "\n" in key + value:
            raise EnvError(f"cannot store {key!r}={value!r} in a U-Boot environment file")
    return "".join(f"{k}={v}\n" for k, v in env.items()).encode()


def grub_slot_cfg(args: str) -> str:
    """boot_X/slot.cfg: what this slot's kernel needs; read by grub.cfg with ``source``."""
    return f'set kiosk_args="{args}"\n'


def _try_next(slot: str, tries: int) -> str:
    steps = [f'if [ "${slot}_try" = {n} ]; then set {slot}_try={n + 1}' for n in range(tries)]
    return "; el".join(steps) + "; fi"


def grub_cfg(common_args: str, tries: int) -> str:
    pick = ""
    for slot in SLOTS:
        pick += (f'    if [ -z "$slot" -a "$s" = {slot} -a "${slot}_ok" = 1 -a "${slot}_try" -lt {tries} ]; then\n'
                 f"      set slot={slot}\n      {_try_next(slot, tries)}\n    fi\n")
    return f"""# Skærmbesøg kiosk: A/B boot with boot counting (see kiosk/image/bootcfg.py).
set timeout=0
regexp --set=1:disk '^([^,]+),' "$root"
set envfile="($disk,gpt1)/EFI/BOOT/grubenv"
load_env -f "$envfile"
if [ -z "$ORDER" ]; then set ORDER="a b"; fi
set slot=""
for s in $ORDER; do
{pick}done
if [ -z "$slot" ]; then
  echo "No slot has tries left: starting over with both."
  set a_try=0
  set b_try=0
  save_env -f "$envfile" a_try b_try
  sleep 5
  reboot
fi
save_env -f "$envfile" a_try b_try
if [ "$slot" = a ]; then set part=gpt{BOOT_PARTITION['a']}; else set part=gpt{BOOT_PARTITION['b']}; fi
source "($disk,$part)/slot.cfg"
linux "($disk,$part)/vmlinuz" $kiosk_args kiosk.slot=$slot rauc.slot=$slot {common_args}
initrd "($disk,$part)/initrd.img"
boot
"""


def uboot_script(common_args: str, tries: int) -> str:
    """boot.cmd for U-Boot (compiled to boot.scr with mkimage): the same counting as grub_cfg.

    The counters live in boot-count.env on the config partition (``env import``/``fatwrite``),
    which kiosk-boot-ok edits from Linux. ``setexpr`` counts in hex: fine below ten tries.
    """
    if tries > 9:
        raise ValueError("at most 9 tries per slot")
    pick = ""
    for slot in SLOTS:
        pick += (f'  if test -z "${{slot}}" && test "${{s}}" = {slot} && test "${{{slot}_ok}}" = 1 '
                 f"&& test ${{{slot}_try}} -lt {tries}; then\n"
                 f"    setenv slot {slot}; setexpr {slot}_try ${{{slot}_try}} + 1\n  fi\n")
    keys = "ORDER a_ok a_try b_ok b_try"
    return f"""# Skærmbesøg kiosk: A/B boot with boot counting (see kiosk/image/bootcfg.py).
setenv kiosk_dev "${{devtype}} ${{devnum}}"
if load ${{kiosk_dev}}:1 ${{ramdisk_addr_r}} boot-count.env; then
  env import -t ${{ramdisk_addr_r}} ${{filesize}} {keys}
fi
test -n "${{ORDER}}" || setenv ORDER "a b"
setenv slot
for s in ${{ORDER}}; do
{pick}done
if test -z "${{slot}}"; then
  echo "No slot has tries left: starting over with both."
  setenv a_try 0; setenv b_try 0
  env export -t ${{ramdisk_addr_r}} {keys}
  fatwrite ${{kiosk_dev}}:1 ${{ramdisk_addr_r}} boot-count.env ${{filesize}}
  sleep 5; reset
fi
env export -t ${{ramdisk_addr_r}} {keys}
fatwrite ${{kiosk_dev}}:1 ${{ramdisk_addr_r}} boot-count.env ${{filesize}}
if test "${{slot}}" = a; then setenv kiosk_part {BOOT_PARTITION['a']}; else setenv kiosk_part {BOOT_PARTITION['b']}; fi
echo "kiosk: booting slot ${{slot}} from partition ${{kiosk_part}} (tries a=${{a_try}} b=${{b_try}})"
load ${{kiosk_dev}}:${{kiosk_part}} ${{ramdisk_addr_r}} slot.env
env import -t ${{ramdisk_addr_r}} ${{filesize}} kiosk_args
load ${{kiosk_dev}}:${{kiosk_part}} ${{kernel_addr_r}} Image
load ${{kiosk_dev}}:${{kiosk_part}} ${{ramdisk_addr_r}} initrd.img
setenv bootargs "${{kiosk_args}} kiosk.slot=${{slot}} rauc.slot=${{slot}} {common_args}"
booti ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdt_addr}}
"""
