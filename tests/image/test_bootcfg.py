"""Boot counting files: GRUB's environment block and config."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.image import bootcfg

keys = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="=#"), min_size=1, max_size=12)
values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@given(st.dictionaries(keys, values, max_size=12))
def test_grubenv_round_trips(env: dict[str, str]) -> None:
    raw = bootcfg.render_grubenv(env)
    assert len(raw) == bootcfg.GRUBENV_SIZE
    assert bootcfg.parse_grubenv(raw) == env


@given(st.binary(max_size=1100))
def test_grubenv_parser_rejects_junk_cleanly(raw: bytes) -> None:
    with contextlib.suppress(bootcfg.EnvError, UnicodeDecodeError):
        bootcfg.parse_grubenv(raw)


def test_an_environment_too_big_or_with_a_newline_is_refused() -> None:
    with pytest.raises(bootcfg.EnvError, match="1024"):
        bootcfg.render_grubenv({"k": "v" * 2000})
    with pytest.raises(bootcfg.EnvError):
        bootcfg.render_grubenv({"k": "a\nb"})


def test_a_new_image_boots_slot_a_with_no_tries_used() -> None:
    env = bootcfg.parse_grubenv(bootcfg.render_grubenv(bootcfg.initial_env()))
    assert env == {"ORDER": "a b", "a_ok": "1", "a_try": "0", "b_ok": "0", "b_try": "0"}


def test_grub_cfg_counts_each_try_up_to_the_limit() -> None:
    cfg = bootcfg.grub_cfg("quiet", tries=3)
    assert 'if [ "$a_try" = 0 ]; then set a_try=1; elif [ "$a_try" = 1 ]; then set a_try=2; ' \
           'elif [ "$a_try" = 2 ]; then set a_try=3; fi' in cfg
    assert '"$b_try" -lt 3' in cfg
    assert "save_env" in cfg and "kiosk.slot=$slot rauc.slot=$slot quiet" in cfg


def test_a_production_kernel_is_quiet_and_a_debug_one_is_not() -> None:
    assert "quiet" in bootcfg.kernel_cmdline("amd64", debug=False).split()
    assert "quiet" not in bootcfg.kernel_cmdline("amd64", debug=True).split()
    assert "sysrq_always_enabled=0" in bootcfg.kernel_cmdline("amd64", debug=False)


def test_slot_args_name_the_verity_root_but_not_the_slot() -> None:
    # the same boot files serve either slot (an update writes them to the one not running)
    args = bootcfg.slot_args(4096, "f" * 64)
    assert args == f"root=/dev/mapper/root kiosk.verity=4096:{'f' * 64}"


def test_uboot_script_counts_like_grub_and_keeps_its_counters_on_the_config_partition() -> None:
    script = bootcfg.uboot_script("quiet", tries=3)
    assert "setexpr a_try ${a_try} + 1" in script and "test ${b_try} -lt 3" in script
    assert script.count("fatwrite ${kiosk_dev}:1") == 2
    assert 'setenv bootargs "${kiosk_args} kiosk.slot=${slot} rauc.slot=${slot} quiet"' in script
    assert bootcfg.uboot_env(bootcfg.initial_env()) == b"ORDER=a b\na_ok=1\na_try=0\nb_ok=0\nb_try=0\n"
    with pytest.raises(ValueError):
        bootcfg.uboot_script("", tries=10)
