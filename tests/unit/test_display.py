from explorer.web.display import md


def test_markdown_characters_are_escaped():
    assert (
        md("**bold** _x_ `code` [a](b) :red[x] <b>")
        == r"\*\*bold\*\* \_x\_ \`code\` \[a\](b) \:red\[x\] \<b\>"
    )


def test_plain_names_are_unchanged():
    assert md("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert md("/tmp/tiny-bert") == "/tmp/tiny-bert"
