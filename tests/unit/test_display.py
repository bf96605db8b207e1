from explorer.web.display import md, plotly_text


def test_markdown_characters_are_escaped():
    assert (
        md("**bold** _x_ `code` [a](b) :red[x] <b>")
        == r"\*\*bold\*\* \_x\_ \`code\` \[a\](b) \:red\[x\] \<b\>"
    )


def test_plain_names_are_unchanged():
    assert md("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert md("/tmp/tiny-bert") == "/tmp/tiny-bert"


def test_plotly_text_escapes_markup_once_and_keeps_quotes():
    assert plotly_text('She said "hello" </s> <b>a & b') == 'She said "hello" &lt;/s&gt; &lt;b&gt;a &amp; b'
