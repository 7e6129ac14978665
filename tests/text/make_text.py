"""Writes the small corpora the unit tests ship with: `english.txt` and `chinese.txt` (our own sentences).

Sentences are drawn from hand-written word lists and templates with a fixed seed, so the files are
reproducible: `python tests/text/make_text.py` rewrites them byte for byte. Real data sets stay in
../shared/data and are never copied here.
"""

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

PEOPLE = ["the director", "my sister", "an old friend", "the critic", "our teacher", "the young actor", "a stranger",
          "the children", "his father", "the writer", "every viewer", "the crew", "Maria", "David", "the neighbours"]
ADJECTIVES = ["gorgeous", "witty", "slow", "charming", "boring", "clever", "dark", "funny", "gentle", "loud",
              "beautiful", "painful", "thoughtful", "careless", "brilliant", "tired", "honest", "strange", "warm",
              "unforgettable", "predictable", "remarkable", "uneven", "delightful", "forgettable", "playful"]
NOUNS = ["film", "movie", "story", "script", "ending", "soundtrack", "performance", "character", "scene", "camera",
         "dialogue", "garden", "river", "kitchen", "window", "letter", "journey", "mountain", "station", "picture",
         "novel", "teacher", "market", "village", "evening", "morning", "question", "answer", "painting", "concert"]
VERBS = ["watched", "loved", "hated", "remembered", "painted", "visited", "played", "described", "enjoyed",
         "explained", "followed", "questioned", "rewrote", "finished", "imagined", "admired", "ignored", "walked past"]
ADVERBS = ["slowly", "quietly", "happily", "carefully", "honestly", "suddenly", "rarely", "always", "never", "often"]
PLACES = ["in Paris", "near the river", "after dinner", "on a rainy day", "at the station", "in the village",
          "before the concert", "during the winter", "in Geneva", "by the window", "at midnight", "in the garden"]
TEMPLATES = [
    "{p} {v} the {a} {n} {pl} .",
    "a {a} , {a2} {n} that {p} {v} {adv} .",
    "{P} {adv} {v} a {a} {n} .",
    "the {n} is {a} but the {n2} is {a2} .",
    "why did {p} say the {n} was {a} ?",
    "{P} {v} the {n} {pl} , and it was {a} !",
    "it 's a {a} {n} ; {p} {v} it {adv} .",
    "not {a} , not {a2} : just a {n} about a {n2} .",
    "{P} said the {n} was {a} ( and {a2} ) .",
    "{pl} , {p} {v} {n_count} {n}s .",
]

# Short phrases of common characters (our own combinations), joined into Chinese sentences with punctuation.
ZH_SUBJECTS = ["我", "你", "他们", "我们", "老师", "学生", "朋友", "妈妈", "这个孩子", "那位医生"]
ZH_VERBS = ["喜欢", "看了", "写了", "去了", "买了", "想念", "认识", "学习", "打扫", "等待"]
ZH_OBJECTS = ["这部电影", "一本书", "北京", "上海的公园", "一封信", "新的房间", "中文", "晚饭", "那条河",
              "这家饭店", "一首歌", "今天的天气", "火车站", "小猫", "春天的花"]
ZH_ENDINGS = ["。", "！", "，觉得很好。", "，非常满意。", "，有点累。", "，真不错！", "吗？",
              "，心情很好。"]
ZH_TIMES = ["昨天", "今天", "明天", "上个月", "周末", "晚上", "早上", ""]


def english_lines(count, seed=0):
    """`count` sentences, lowercase except names and sentence-initial capitals."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        p = rng.choice(PEOPLE)
        a, a2 = rng.sample(ADJECTIVES, 2)
        n, n2 = rng.sample(NOUNS, 2)
        line = rng.choice(TEMPLATES).format(
            p=p, P=p[0].upper() + p[1:], v=rng.choice(VERBS), a=a, a2=a2, n=n, n2=n2, adv=rng.choice(ADVERBS),
            pl=rng.choice(PLACES), n_count=rng.choice(["two", "three", "seven", "many", "no"]))
        lines.append(line[0].upper() + line[1:] if rng.random() < 0.5 else line)
    return lines


def chinese_lines(count, seed=1):
    rng = random.Random(seed)
    return [rng.choice(ZH_TIMES) + rng.choice(ZH_SUBJECTS) + rng.choice(ZH_VERBS) + rng.choice(ZH_OBJECTS)
            + rng.choice(ZH_ENDINGS) for _ in range(count)]


def main():
    (HERE / "english.txt").write_text("\n".join(english_lines(800)) + "\n", encoding="utf-8")
    (HERE / "chinese.txt").write_text("\n".join(chinese_lines(200)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
