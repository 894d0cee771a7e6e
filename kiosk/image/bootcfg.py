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


def kernel_cmdline(debug: bool) -> str:
    """What every slot boots with; the slot adds its root and verity hash."""
    args = ["ro", "rootfstype=erofs", "systemd.volatile=state", "systemd.gpt_auto=0",
            "panic=10", "oops=panic", "sysrq_always_enabled=0", "vt.global_cursor_default=0",
            "console=ttyS0,115200", "console=tty1", "loglevel=3", "systemd.show_status=auto"]
    if not debug:
        args.append("quiet")
    return " ".join(args)


def slot_args(root_partuuid: str, hash_offset: int, root_hash: str) -> str:
    return f"root=/dev/mapper/root kiosk.verity={root_partuuid.lower()}:{hash_offset}:{root_hash}"


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
linux "($disk,$part)/vmlinuz" $kiosk_args kiosk.slot=$slot {common_args}
initrd "($disk,$part)/initrd.img"
boot
"""
