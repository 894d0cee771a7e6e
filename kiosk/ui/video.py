"""The caller's video on screen: YUV planes straight into three textures, converted by a shader.

aiortc decodes in its own thread and hands each frame to the event loop, which
is Kivy's main thread too (the app runs on asyncio). :meth:`VideoView.show`
keeps only the newest frame (a reference, no copy) and asks for one draw on
the next Kivy frame; the draw uploads the Y, U and V planes as they are
(``rowlength`` is the plane's line size, so padding costs nothing): that upload
is the only copy. The textures are made once, and again only if the caller's
picture changes size. Nothing is drawn when no frame came: an idle screen
costs no GPU time.

Video from browsers is limited range (16-235) BT.601; the shader expands it,
so pictures are not washed out (Kivy's own YUV shader assumes full range).
"""

from __future__ import annotations

from typing import Any, Final

import av
from kivy.clock import Clock
from kivy.core.window import Window  # noqa: F401  (the GL context must exist before a shader is built)
from kivy.graphics import BindTexture, Color, Rectangle, RenderContext
from kivy.graphics.texture import Texture
from kivy.uix.widget import Widget

YUV_SHADER: Final = """
$HEADER$
uniform sampler2D tex_u;
uniform sampler2D tex_v;
void main(void) {
    float y = 1.16438 * (texture2D(texture0, tex_coord0).r - 0.0625);
    float u = texture2D(tex_u, tex_coord0).r - 0.5;
    float v = texture2D(tex_v, tex_coord0).r - 0.5;
    gl_FragColor = frag_color * vec4(
        y + 1.59603 * v,
        y - 0.39176 * u - 0.81297 * v,
        y + 2.01723 * u,
        1.0);
}
"""


def fit(frame_size: tuple[int, int], box_pos: tuple[float, float], box_size: tuple[float, float]) -> tuple[
        tuple[float, float], tuple[float, float]]:
    """The largest rectangle of the frame's shape centred in the box (nothing of the caller cut off)."""
    fw, fh = frame_size
    bw, bh = box_size
    scale = min(bw / fw, bh / fh) if fw and fh else 0.0
    w, h = fw * scale, fh * scale
    return (box_pos[0] + (bw - w) / 2, box_pos[1] + (bh - h) / 2), (w, h)


class VideoView(Widget):  # type: ignore[misc]
    """Shows the newest of the frames given to :meth:`show` (main thread only)."""

    def __init__(self, **kwargs: Any) -> None:
        self.canvas = RenderContext(use_parent_projection=True, use_parent_modelview=True,
                                    use_parent_frag_modelview=True)
        self.canvas.shader.fs = YUV_SHADER
        super().__init__(**kwargs)
        self.frames_shown = 0
        self.textures_made = 0
        self._pending: av.VideoFrame | None = None
        self._planes: tuple[Texture, Texture, Texture] | None = None
        self._frame_size = (0, 0)
        self._draw = Clock.create_trigger(self._draw_pending, 0)
        with self.canvas:
            self._bind_u = BindTexture(index=1)
            self._bind_v = BindTexture(index=2)
            Color(1, 1, 1, 1)
            self._rect = Rectangle(pos=self.pos, size=(0, 0))
        self.canvas["tex_u"] = 1
        self.canvas["tex_v"] = 2
        self.bind(pos=self._layout, size=self._layout)

    def show(self, frame: av.VideoFrame) -> None:
        """Take a decoded frame; it is drawn at the next screen refresh (older ones are skipped)."""
        self._pending = frame
        self._draw()

    def _draw_pending(self, _dt: float) -> None:
        frame, self._pending = self._pending, None
        if frame is None:
            return
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")  # rare: decoders give yuv420p
        planes = self._textures(frame.width, frame.height)
        for texture, plane in zip(planes, frame.planes, strict=True):
            texture.blit_buffer(plane, colorfmt="luminance", bufferfmt="ubyte", rowlength=plane.line_size)
        self.frames_shown += 1
        self.canvas.ask_update()

    def _textures(self, width: int, height: int) -> tuple[Texture, Texture, Texture]:
        if self._planes is None or self._frame_size != (width, height):
            half = ((width + 1) // 2, (height + 1) // 2)
            planes = tuple(Texture.create(size=size, colorfmt="luminance")
                           for size in ((width, height), half, half))
            for texture in planes:
                texture.flip_vertical()  # video rows run top down, GL's bottom up
            self._planes = (planes[0], planes[1], planes[2])
            self._frame_size = (width, height)
            self.textures_made += 1
            self._rect.texture = planes[0]
            self._bind_u.texture = planes[1]
            self._bind_v.texture = planes[2]
            self._layout()
        return self._planes

    def _layout(self, *_args: Any) -> None:
        pos, size = fit(self._frame_size, (self.x, self.y), (self.width, self.height))
        self._rect.pos, self._rect.size = pos, size
