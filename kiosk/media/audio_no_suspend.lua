-- Skærmbesøg kiosk: sound devices are never suspended when idle (kiosk/media/audio.py).
-- For WirePlumber 0.4 (Debian bookworm); installed as
-- /etc/wireplumber/main.lua.d/51-kiosk-no-suspend.lua (0.5 takes audio_no_suspend_wp05.conf).
--
-- WirePlumber 0.4.13 (Debian bookworm) crashes when a device disappears while
-- its idle-suspend timer runs: suspend-node.lua keeps the timer of a removed
-- node and then sends "Suspend" to it (segfault in wp_node_send_command).
-- A USB speaker unplugged within seconds of going quiet would take the
-- session manager down mid-call. A kiosk also must not lose the first moment
-- of a ring to a device waking up. A timeout of 0 means "never suspend".
table.insert(alsa_monitor.rules, {
  matches = {
    { { "node.name", "matches", "alsa_output.*" } },
    { { "node.name", "matches", "alsa_input.*" } },
  },
  apply_properties = {
    ["session.suspend-timeout-seconds"] = 0,
  },
})
