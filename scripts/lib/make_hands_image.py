"""Draws tests/images/two-hands.png: two open hands (a right and its mirror, a left) for the hand
tracker's test. No registry package ships a photo of hands; MediaPipe's palm detector finds these.

The hand is the "raised hand with fingers splayed, dark skin tone" emoji (U+1F590 U+1F3FF) from
Debian's fonts-noto-color-emoji (SIL Open Font License 1.1), drawn at its bitmap size and scaled.
The picture is committed rather than drawn at test time so that a different FreeType cannot change
what the test sees; this script says how it was made.

    apt-get install fonts-noto-color-emoji
    <worker venv>/bin/python scripts/lib/make_hands_image.py tests/images/two-hands.png
"""

import sys

from PIL import Image, ImageDraw, ImageFont, ImageOps

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
HAND = "\U0001F590\U0001F3FF"
BACKGROUND = (120, 140, 160)
SIDE = 260


def main(out: str) -> None:
    # 109 px is the font's one bitmap strike; other sizes do not render.
    font = ImageFont.truetype(FONT, 109)
    glyph = Image.new("RGB", (136, 128), BACKGROUND)
    ImageDraw.Draw(glyph).text((0, 0), HAND, font=font, embedded_color=True)
    right = glyph.resize((SIDE, SIDE * 128 // 136), Image.LANCZOS)
    canvas = Image.new("RGB", (SIDE * 2 + 120, SIDE + 80), BACKGROUND)
    canvas.paste(right, (30, 40))
    canvas.paste(ImageOps.mirror(right), (SIDE + 90, 40))
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1])
