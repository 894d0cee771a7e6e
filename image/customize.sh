#!/bin/sh
# mmdebstrap customize hook: turn the installed Debian tree into the kiosk root.
#   customize.sh ROOT ARCH OVERLAY DEBUG(0|1) INITRAMFS_MODULES...
# Runs on the build host as root; commands inside the tree run through chroot (qemu-user
# for a foreign architecture).
set -eu
root=$1 arch=$2 overlay=$3 debug=$4
shift 4

cp -a "$overlay"/. "$root"/
printf '%s\n' "$@" > "$root/etc/initramfs-tools/modules"

in_root() { chroot "$root" "$@"; }

# The screen's own unprivileged user; its home is a runtime directory (the root is read-only).
in_root useradd --system --user-group --home-dir /run/kiosk-ui --no-create-home \
    --shell /usr/sbin/nologin --groups video,render,input,audio kiosk-ui

# No pointer on a touch screen: cage draws its cursor (at the screen's centre) whenever any
# input device says it can point (QEMU's PS/2 mouse, some HDMI-CEC and remote-control
# receivers), and has no switch to hide it. Its cursor comes from the Xcursor theme named
# "default" (cage asks wlroots for no theme by name; a theme named only in XCURSOR_THEME
# left the arrow drawn in a boot under QEMU), as do the app's own (XCURSOR_THEME=default in
# kiosk-ui.service): this theme's cursors are one transparent pixel. (Xcursor format: file
# header, one table entry, one 1x1 ARGB image.)
blank=$root/usr/share/icons/default
mkdir -p "$blank/cursors"
rm -f "$blank/index.theme"  # Debian's x-cursor-theme alternative may link it elsewhere
printf '[Icon Theme]\nName=default\nComment=Every cursor invisible (a touch kiosk)\n' > "$blank/index.theme"
python3 -c 'import struct, sys
image = struct.pack("<9I", 36, 0xFFFD0002, 24, 1, 1, 1, 0, 0, 0) + struct.pack("<I", 0)
sys.stdout.buffer.write(struct.pack("<4sIII", b"Xcur", 16, 0x10000, 1) + struct.pack("<3I", 0xFFFD0002, 24, 28) + image)' \
    > "$blank/cursors/default"
for name in left_ptr arrow top_left_arrow pointer hand2 text xterm; do
    ln -sf default "$blank/cursors/$name"
done

# Mount points on the read-only root; /var itself is a tmpfs (systemd.volatile=state).
mkdir -p "$root/boot/config" "$root/data"
# systemd gives each boot a transient machine id (the root cannot keep one).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

in_root systemctl enable kiosk-agent.service kiosk-ui.service kiosk-boot-ok.service \
    kiosk-firewall.service kiosk-firewall.timer nftables.service systemd-timesyncd.service \
    NetworkManager.service
in_root systemctl set-default graphical.target
in_root systemctl mask systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer grub-common.service
if [ "$debug" = 1 ]; then
    echo "debug build: a root login on the serial console" >&2
    in_root passwd -d root
else
    # No login anywhere: no getty on any VT or serial line, no rescue or debug shell.
    in_root systemctl mask getty@.service serial-getty@.service autovt@.service \
        console-getty.service container-getty@.service debug-shell.service \
        rescue.service emergency.service
    in_root passwd -l root
fi

# Nobody logs in to a kiosk: su, passwd, mount and the like lose their setuid/setgid bits.
# Only D-Bus's activation helper keeps its (image/audit-policy.toml checks the result).
find "$root" -xdev -type f -perm /6000 ! -path "$root/usr/lib/dbus-1.0/dbus-daemon-launch-helper" \
    -exec chmod ug-s {} +

# Pygments and docutils: python3-kivy depends on them for its code and reStructuredText
# widgets, which the screen never uses (tests/image/test_recipe.py checks): 15 MB. Removed
# once installed (left out by dpkg, their packages' byte-compiling step fails).
rm -rf "$root/usr/lib/python3/dist-packages/pygments" "$root/usr/lib/python3/dist-packages/docutils"

# -c: a foreign (emulated) build deferred the kernel's own initramfs (kiosk/image/emulation.py)
in_root update-initramfs -c -k all

if [ "$arch" = amd64 ]; then
    # GRUB as one EFI binary; its grub.cfg and grubenv sit beside it on the config partition.
    in_root grub-mkimage -O x86_64-efi -p /EFI/BOOT -o /boot/BOOTX64.EFI \
        part_gpt fat normal linux configfile loadenv test echo regexp cat sleep reboot halt \
        all_video efi_gop gzio
    # GRUB's modules and fonts are in BOOTX64.EFI now; the root keeps only grub-editenv
    # (kiosk-boot-ok marks the slot good).
    rm -rf "$root/usr/lib/grub" "$root/usr/share/grub"
fi
