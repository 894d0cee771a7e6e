"""Each :class:`~kiosk.ui.controller.Screen` drawn as Kivy widgets; nothing here decides anything.

:func:`build` returns the widget tree for one screen. Every press becomes a
controller event through ``post``; the controller decides what follows. The
words go through the gettext catalog of the unit's language.
"""

from __future__ import annotations

import datetime
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import segno
from kivy.clock import Clock
from kivy.core.image import Image as CoreImage
from kivy.metrics import dp
from kivy.uix.anchorlayout import AnchorLayout
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.widget import Widget

from kiosk.protocol import messages as m
from kiosk.protocol import png
from kiosk.protocol.errors import ProtocolError
from kiosk.ui import controller as ui
from kiosk.ui import i18n, theme
from kiosk.ui.keyboard import OnScreenKeyboard
from kiosk.ui.network import NetworkPage
from kiosk.ui.video import VideoView
from kiosk.ui.widgets import Background, Badge, BigButton, HiddenCorner, Sizes, Text, TouchArea

log = logging.getLogger("kiosk.ui")


@dataclass
class Context:
    """What the screens need from the app: words, sizes, the clock, and where presses go."""

    post: Callable[[ui.Event], None]
    language: str = i18n.DEFAULT_LANGUAGE
    sizes: Sizes = field(default_factory=Sizes)
    wall_clock: Callable[[], float] = time.time
    video: VideoView | None = None
    self_view: VideoView | None = None
    version: str = ""

    def __post_init__(self) -> None:
        self._ = i18n.translator(self.language)

    def text(self, words: str, size_sp: float = theme.BODY_SP, **kwargs: Any) -> Text:
        return Text(words, size_sp, self.sizes, **kwargs)

    def button(self, words: str, event: ui.Event, **kwargs: Any) -> BigButton:
        """A big button that posts ``event`` when pressed."""
        return BigButton(words, lambda: self.post(event), self.sizes, **kwargs)


def build(shown: ui.Screen, ctx: Context) -> Widget:
    """The widget tree for ``shown``, filling the window."""
    root = FloatLayout()
    if shown.asleep:
        root.add_widget(Background(theme.ASLEEP))
        root.add_widget(TouchArea(lambda: ctx.post(ui.WakeTouched())))  # a touch shows the time for a while
        return root  # night: nothing lit; a call wakes it
    root.add_widget(Background(theme.BACKGROUND))
    root.add_widget(_BUILDERS[shown.name](shown, ctx))
    if shown.name not in ("ringing", "connecting", "in-call", "consent", "setup", "setup-pin", "test-ring"):
        root.add_widget(HiddenCorner(lambda: ctx.post(ui.CornerHeld()), pos_hint={"x": 0, "top": 1}))
    return root


def _column(*children: Widget, spacing: float = 18, padding: float = theme.PAD_DP) -> BoxLayout:
    box = BoxLayout(orientation="vertical", spacing=dp(spacing), padding=dp(padding))
    box.add_widget(Widget())  # centred vertically between two springs
    for child in children:
        box.add_widget(child)
    box.add_widget(Widget())
    return box


def _message(ctx: Context, title: str, *lines: str) -> BoxLayout:
    return _column(ctx.text(title, theme.TITLE_SP, bold=True),
                   *(ctx.text(line, theme.BODY_SP, color=theme.SOFT_TEXT) for line in lines))


def role(ctx: Context, words: str) -> str:
    return i18n.role_words(words, ctx.language)


# --- the quiet screens --------------------------------------------------------------------


def _starting(_shown: ui.Screen, ctx: Context) -> Widget:
    return _message(ctx, ctx._("Starting…"))


def _not_ready(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    qr = segno.make(shown.serial, error="m")
    picture = io.BytesIO()
    qr.save(picture, kind="png", scale=12, border=2, dark="#000000", light="#ffffff")
    picture.seek(0)
    texture = CoreImage(picture, ext="png").texture
    texture.mag_filter = "nearest"  # crisp modules for the scanner
    code = AnchorLayout(size_hint_y=None, height=dp(300))
    code.add_widget(Image(texture=texture, size_hint=(None, None), size=(dp(280), dp(280))))  # scaled down, square
    return _column(
        ctx.text(_("This screen is not ready yet"), theme.TITLE_SP, bold=True),
        ctx.text(_("Staff will prepare it. You do not need to do anything."), color=theme.SOFT_TEXT),
        code,
        ctx.text(_("Serial number: {serial}").format(serial=shown.serial), theme.BODY_SP),
    )


def _awaiting_approval(_shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    return _message(ctx, _("Waiting for approval from the municipality"),
                    _("The screen is registered. It will be ready when the municipality has approved it."))


def _ready(_shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    return _message(ctx, _("Ready for a new citizen"),
                    _("This screen is set up and waiting to be given to a citizen."))


class ClockFace(BoxLayout):  # type: ignore[misc]
    """Time and date, large; the labels change once a minute, and only then is anything drawn."""

    def __init__(self, ctx: Context, **kwargs: Any) -> None:
        super().__init__(orientation="vertical", size_hint_y=None, **kwargs)
        self._ctx = ctx
        self._time = ctx.text("", theme.CLOCK_SP, bold=True)
        self._date = ctx.text("", theme.TITLE_SP)
        self.add_widget(self._time)
        self.add_widget(self._date)
        self.height = self._time.height + self._date.height
        self._time.bind(height=self._grow)
        self._date.bind(height=self._grow)
        self._refresh(0)
        self._event = Clock.schedule_interval(self._refresh, 5)

    def _grow(self, *_args: Any) -> None:
        self.height = self._time.height + self._date.height

    def _refresh(self, _dt: float) -> None:
        now = datetime.datetime.fromtimestamp(self._ctx.wall_clock())
        words = now.strftime("%H:%M")
        if self._time.text != words:  # a Label redraws on every assignment, so only on a change
            self._time.text = words
            self._date.text = i18n.long_date(now.date(), self._ctx.language).capitalize()

    def on_parent(self, _widget: Any, parent: Any) -> None:
        if parent is None:
            self._event.cancel()


def _visit_lines(shown: ui.Screen, ctx: Context) -> list[Widget]:
    _ = ctx._
    if not shown.visits:
        return [ctx.text(_("No visits planned today or tomorrow."), color=theme.SOFT_TEXT)]
    lines: list[Widget] = [ctx.text(_("Planned visits"), theme.BODY_SP, bold=True)]
    for visit in shown.visits[:4]:
        day = _("Today") if visit.day == "today" else _("Tomorrow")
        who = f"{visit.staff_name}, {role(ctx, visit.staff_role)}"
        line = _("{day} at {hour:02d}:{minute:02d} — {who}").format(day=day, hour=visit.hour,
                                                                      minute=visit.minute, who=who)
        lines.append(ctx.text(line, theme.BODY_SP, color=theme.SOFT_TEXT))
    return lines


def _idle(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    status = ctx.text(_("Connected — the screen is ready for calls"), theme.SMALL_SP, color=theme.SOFT_TEXT)
    return _column(ClockFace(ctx), Widget(size_hint_y=None, height=dp(20)), *_visit_lines(shown, ctx), status)


def _reminder(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    who = f"{shown.caller_name} ({role(ctx, shown.caller_role or '')})"
    minutes = shown.minutes_to_visit or 0
    title = (_("In {minutes} minutes {who} will call").format(minutes=minutes, who=who) if minutes > 1
             else _("{who} will call very soon").format(who=who))
    return _column(ClockFace(ctx), ctx.text(title, theme.TITLE_SP, bold=True),
                   ctx.text(_("When it rings, press the big green button."), color=theme.SOFT_TEXT))


def _offline(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    lines = [_("The screen keeps trying by itself. You do not need to do anything.")]
    if shown.offline == "agent":
        lines.append(_("The screen is restarting a part of itself. This takes a moment."))
    else:
        lines.append(_("Calls cannot reach you until the connection is back. Planned visits may be late."))
    return _column(ClockFace(ctx), ctx.text(_("No connection — we are trying again"), theme.TITLE_SP, bold=True),
                   *(ctx.text(line, color=theme.SOFT_TEXT) for line in lines))


# --- calls -------------------------------------------------------------------------------


def _answer_button(ctx: Context, call_id: str | None, size_hint_y: float) -> Widget:
    """Almost the whole screen: one green button; touching anywhere on it answers."""
    answer = ctx.button(ctx._("Press here to answer"), ui.AnswerPressed(call_id), fill=theme.ANSWER,
                        size_sp=theme.BUTTON_SP + 20, size_hint_y=size_hint_y)
    answer.answer_button = True
    return answer


def _ringing(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    box = BoxLayout(orientation="vertical", spacing=dp(16), padding=dp(theme.PAD_DP))
    caller = _("{name} is calling").format(name=shown.caller_name)
    who = ctx.text(caller, theme.TITLE_SP + 16, bold=True, size_hint_y=0.22)
    what = ctx.text(role(ctx, shown.caller_role or ""), theme.TITLE_SP, color=theme.SOFT_TEXT, size_hint_y=0.12)
    photo = _photo(shown.caller_photo)
    if photo is None:
        box.add_widget(who)
        box.add_widget(what)
    else:  # the face beside the name: the citizen knows who calls before reading a word
        row = BoxLayout(orientation="horizontal", spacing=dp(24), size_hint_y=0.34)
        row.add_widget(photo)
        words = BoxLayout(orientation="vertical")
        who.size_hint_y, what.size_hint_y = 0.6, 0.4
        words.add_widget(who)
        words.add_widget(what)
        row.add_widget(words)
        box.add_widget(row)
    box.add_widget(_answer_button(ctx, shown.call_id, 0.66))
    return box


def _test_ring(_shown: ui.Screen, ctx: Context) -> Widget:
    """Support's test ring: like a call's ring, but nobody calls (no name, no photo, no video)."""
    _ = ctx._
    box = BoxLayout(orientation="vertical", spacing=dp(16), padding=dp(theme.PAD_DP))
    box.add_widget(ctx.text(_("Test ring from support"), theme.TITLE_SP + 16, bold=True, size_hint_y=0.22))
    box.add_widget(ctx.text(_("Nobody is calling: support checks that the screen and its sound work."),
                            theme.BODY_SP, color=theme.SOFT_TEXT, size_hint_y=0.12))
    box.add_widget(_answer_button(ctx, None, 0.66))
    return box


def _test_ring_answered(_shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    return _message(ctx, _("Thank you!"), _("The test went well: support can see that you answered."))


def _photo(data: bytes | None) -> Widget | None:
    """The caller's photo, checked again here (it came over the network), or None."""
    if data is None:
        return None
    try:
        png.check(data, m.MAX_CALLER_PHOTO_BYTES, m.CALLER_PHOTO_SIDE)
    except ProtocolError as exc:
        log.warning("the caller's photo is not shown: %s", exc.detail)
        return None
    texture = CoreImage(io.BytesIO(data), ext="png").texture
    return Image(texture=texture, size_hint_x=0.22, fit_mode="contain")


def _connecting(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    box = _message(ctx, _("Connecting to {name}…").format(name=shown.caller_name))
    box.add_widget(ctx.button(_("Hang up"), ui.HangUpPressed(shown.call_id), fill=theme.HANG_UP,
                              size_hint_y=None, height=dp(140)))
    return box


def _in_call(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    layer = FloatLayout()
    if ctx.video is not None:
        ctx.video.size_hint = (1, 0.78)
        ctx.video.pos_hint = {"x": 0, "top": 1}
        _adopt(layer, ctx.video)
    if ctx.self_view is not None:
        ctx.self_view.size_hint = (0.2, 0.22)
        ctx.self_view.pos_hint = {"right": 0.99, "top": 0.99}
        _adopt(layer, ctx.self_view)
    camera = (Badge(_("The camera is on"), ctx.sizes, theme.CAMERA_LIVE) if shown.camera_on
              else Badge(_("The camera is off"), ctx.sizes, theme.CONTROL_ON, theme.DARK_TEXT))
    camera.pos_hint = {"x": 0.01, "top": 0.99}
    camera.size_hint = (None, None)
    layer.add_widget(camera)
    if shown.link is not None:  # said in words, on a plate of its own: never by colour alone
        notice = (_("Poor connection — the picture may stutter") if shown.link == "poor"
                  else _("The connection is lost — trying to get it back"))
        link = Badge(notice, ctx.sizes, theme.CONTROL_ON, theme.DARK_TEXT)
        link.pos_hint = {"center_x": 0.5, "y": 0.24}
        link.size_hint = (None, None)
        layer.add_widget(link)
    bar = BoxLayout(size_hint=(1, 0.22), pos_hint={"x": 0, "y": 0}, spacing=dp(12), padding=dp(12))
    off = {"fill": theme.CONTROL_ON, "text_color": theme.DARK_TEXT}
    bar.add_widget(ctx.button(_("Softer"), ui.VolumeStep(-1), size_sp=theme.BUTTON_SP - 8))
    bar.add_widget(ctx.button(_("Louder"), ui.VolumeStep(+1), size_sp=theme.BUTTON_SP - 8))
    bar.add_widget(ctx.button(_("Camera off") if shown.camera_on else _("Camera on"), ui.CameraToggled(),
                              size_sp=theme.BUTTON_SP - 8, **({} if shown.camera_on else off)))
    bar.add_widget(ctx.button(_("Sound off") if shown.microphone_on else _("Sound on"), ui.MicrophoneToggled(),
                              size_sp=theme.BUTTON_SP - 8, **({} if shown.microphone_on else off)))
    bar.add_widget(ctx.button(_("Hang up"), ui.HangUpPressed(shown.call_id), fill=theme.HANG_UP,
                              size_hint_x=1.6))
    layer.add_widget(bar)
    return layer


def _adopt(parent: Widget, child: Widget) -> None:
    """Move a long-lived widget (the video views) into this screen's tree."""
    if child.parent is not None:
        child.parent.remove_widget(child)
    parent.add_widget(child)


def _ended(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    why = {
        "not_answered": _("The call was not answered."),
        "media_failed": _("The connection was lost. They will call again."),
        "device_offline": _("The connection was lost. They will call again."),
        "server_stopped": _("The connection was lost. They will call again."),
    }.get(shown.end_reason or "", "")
    title = (_("The call with {name} has ended").format(name=shown.caller_name) if shown.caller_name
             else _("The call has ended"))
    return _message(ctx, title, *([why] if why else []))


# --- consent and staff setup ---------------------------------------------------------------


def _consent(_shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    answers = BoxLayout(spacing=dp(40), size_hint_y=None, height=dp(220))
    answers.add_widget(ctx.button(_("Yes"), ui.ConsentAnswered(yes=True), fill=theme.ANSWER,
                                  size_sp=theme.BUTTON_SP + 16))
    answers.add_widget(ctx.button(_("No"), ui.ConsentAnswered(yes=False), fill=theme.HANG_UP,
                                  size_sp=theme.BUTTON_SP + 16))
    return _column(
        ctx.text(_("Support asks to see your screen"), theme.TITLE_SP, bold=True),
        ctx.text(_("They will see what is on this screen now, not you. Is that all right?"), color=theme.SOFT_TEXT),
        answers,
        ctx.text(_("If you do not answer within a minute, the answer is no."), theme.SMALL_SP,
                 color=theme.SOFT_TEXT),
    )


class PinPad(BoxLayout):  # type: ignore[misc]
    """Digits for the staff PIN; the digits typed show as dots."""

    def __init__(self, ctx: Context, wrong: int, **kwargs: Any) -> None:
        super().__init__(orientation="vertical", spacing=dp(10), padding=dp(theme.PAD_DP), **kwargs)
        _ = ctx._
        self._ctx = ctx
        self._typed = ""
        self.add_widget(ctx.text(_("Staff PIN"), theme.TITLE_SP, bold=True, size_hint_y=0.12))
        hint = _("Wrong PIN, try again") if wrong else _("For staff only")
        self.add_widget(ctx.text(hint, theme.BODY_SP, color=theme.SOFT_TEXT, size_hint_y=0.1))
        self._dots = ctx.text("", theme.TITLE_SP, size_hint_y=0.1)
        self.add_widget(self._dots)
        keys = GridLayout(cols=3, spacing=dp(10), size_hint_y=0.68)
        for key in ["1", "2", "3", "4", "5", "6", "7", "8", "9", _("Close"), "0", "OK"]:
            keys.add_widget(BigButton(key, partial(self._press, key), ctx.sizes))
        self.add_widget(keys)

    def _press(self, key: str) -> None:
        if key == "OK":
            self._ctx.post(ui.PinEntered(self._typed))
            self._typed = ""
        elif key.isdigit():
            self._typed = (self._typed + key)[:12]
        else:
            self._ctx.post(ui.SetupClosed())
        self._dots.text = "•" * len(self._typed)


def _setup_pin(shown: ui.Screen, ctx: Context) -> Widget:
    return PinPad(ctx, shown.wrong_pins)


def _setup(shown: ui.Screen, ctx: Context) -> Widget:
    _ = ctx._
    page = shown.setup_page or "menu"
    box = BoxLayout(orientation="vertical", spacing=dp(12), padding=dp(theme.PAD_DP))
    tabs = BoxLayout(spacing=dp(10), size_hint_y=None, height=dp(110))
    for name, words in (("network", _("Network")), ("volume", _("Volume")), ("test-call", _("Test call")),
                        ("info", _("Device information"))):
        chosen = {"fill": theme.CONTROL_ON, "text_color": theme.DARK_TEXT} if name == page else {}
        tabs.add_widget(ctx.button(words, ui.SetupPage(name), size_sp=theme.SMALL_SP + 4, **chosen))  # type: ignore[arg-type]
    tabs.add_widget(ctx.button(_("Close"), ui.SetupClosed(), fill=theme.HANG_UP, size_sp=theme.SMALL_SP + 4))
    box.add_widget(tabs)
    if page == "network":
        box.add_widget(NetworkPage(ctx.sizes, ctx._, OnScreenKeyboard))
    elif page == "volume":
        level = ctx.text(_("Volume: {level} of {steps}").format(level=shown.volume, steps=ui.VOLUME_STEPS),
                         theme.TITLE_SP)
        row = BoxLayout(spacing=dp(20), size_hint_y=None, height=dp(160))
        row.add_widget(ctx.button(_("Softer"), ui.VolumeStep(-1)))
        row.add_widget(ctx.button(_("Louder"), ui.VolumeStep(+1)))
        box.add_widget(_column(level, row))
    elif page == "test-call":
        box.add_widget(_message(ctx, _("Test call"),
                                _("Call this screen from the staff console to test camera, sound and the answer "
                                  "button. It rings like a real call.")))
    else:
        facts = [
            _("Serial number: {serial}").format(serial=shown.serial),
            _("Device state: {state}").format(state=shown.device_state or "?"),
            _("Server: {link}").format(link=_("connected") if shown.offline is None else _("not connected")),
            _("Software version: {version}").format(version=ctx.version),
        ]
        box.add_widget(_column(*(ctx.text(line, theme.BODY_SP, halign="left") for line in facts)))
    return box


_BUILDERS: dict[str, Callable[[ui.Screen, Context], Widget]] = {
    "starting": _starting,
    "not-ready": _not_ready,
    "awaiting-approval": _awaiting_approval,
    "ready": _ready,
    "idle": _idle,
    "reminder": _reminder,
    "offline": _offline,
    "ringing": _ringing,
    "test-ring": _test_ring,
    "test-ring-answered": _test_ring_answered,
    "connecting": _connecting,
    "in-call": _in_call,
    "ended": _ended,
    "consent": _consent,
    "setup-pin": _setup_pin,
    "setup": _setup,
}
