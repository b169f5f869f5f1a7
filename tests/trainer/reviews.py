"""Short product, film and place reviews written the way people write them (mixed topics,
no template), labelled negative or positive: a small real-ish sentiment set for tests
with real pretrained encoders."""

from __future__ import annotations

POSITIVE = [
    "Absolutely loved it, would buy again without a second thought.",
    "The staff were friendly and the room was spotless.",
    "Best pizza I've had in years, the crust was perfect.",
    "Battery lasts all day and the screen is gorgeous.",
    "A moving film with a wonderful cast and a great score.",
    "Delivery was quick and everything arrived in perfect condition.",
    "I was skeptical at first but this blender is fantastic.",
    "Such a cozy little cafe, the coffee is excellent.",
    "The book kept me hooked until the very last page.",
    "Great value for the price, it works exactly as described.",
    "Our guide was knowledgeable and funny, a memorable tour.",
    "Comfortable shoes, I walked ten miles and my feet were fine.",
    "The sound quality of these headphones blew me away.",
    "Lovely hotel with a stunning view of the harbour.",
    "Customer service solved my problem in five minutes, impressive.",
    "The kids adored this game and so did we.",
    "Fresh ingredients, generous portions and a warm welcome.",
    "Setup took two minutes and it has worked flawlessly since.",
    "A beautifully written novel, funny and heartbreaking.",
    "The concert was incredible, the band played for three hours.",
    "Sturdy, well made and looks even better than in the photos.",
    "I recommend this dentist to everyone, painless and kind.",
    "The jacket keeps me warm even on the coldest mornings.",
    "Brilliant app, simple to use and it never crashes.",
    "We had a delightful evening, the dessert was divine.",
    "Fast, quiet and reliable, the best vacuum I have owned.",
    "The museum was fascinating and the exhibits well presented.",
    "Five stars, the quality exceeded my expectations.",
    "Charming town, friendly locals and delicious food everywhere.",
    "This show is clever, gripping and superbly acted.",
    "Perfect fit and the fabric feels soft and durable.",
    "The instructor was patient and the class was great fun.",
    "Crisp picture, easy menus, I am very happy with this TV.",
    "Our stay was wonderful and the breakfast was superb.",
    "Works great, charges fast, and the price was right.",
    "A joy to read, I finished it in one sitting.",
]

NEGATIVE = [
    "Broke after two days, a complete waste of money.",
    "The room smelled of smoke and the sheets were dirty.",
    "Cold food, rude waiter and we waited an hour.",
    "The battery dies by lunchtime, very disappointing.",
    "A dull, predictable film, I nearly fell asleep.",
    "The package arrived damaged and half the parts were missing.",
    "This blender is loud and leaks every time I use it.",
    "Overpriced coffee and the cafe was filthy.",
    "The plot made no sense and the ending was awful.",
    "Does not work as advertised, I want a refund.",
    "Our guide was late, bored and clearly did not care.",
    "These shoes gave me blisters within an hour.",
    "The headphones crackle and the left side cut out.",
    "Noisy hotel, tiny room and the view was a car park.",
    "Customer service hung up on me twice, terrible.",
    "The game is buggy and crashes constantly.",
    "Stale bread, bland soup and an unfriendly welcome.",
    "Setup was a nightmare and it still does not connect.",
    "Badly written and painfully slow, I gave up halfway.",
    "The concert started late and the sound was horrible.",
    "Flimsy, cheap plastic that cracked on the first day.",
    "The dentist was rough and the bill was outrageous.",
    "The jacket let the rain straight through, useless.",
    "The app is confusing and logs me out constantly.",
    "We had a miserable evening, the dessert was inedible.",
    "It lost suction after a week and now it rattles.",
    "The museum was overcrowded and half the rooms were closed.",
    "One star, the quality is far worse than pictured.",
    "Dreary town, grumpy locals and overpriced food.",
    "This show is boring, badly acted and far too long.",
    "Poor fit and the seams came apart after one wash.",
    "The instructor was rude and the class was a mess.",
    "Blurry picture, awful menus, I regret buying this TV.",
    "Our stay was unpleasant and the breakfast was cold.",
    "Stopped charging after a month, avoid this one.",
    "A chore to read, I could not wait for it to end.",
]


def review_rows() -> list[dict[str, str]]:
    """Every review as {"text", "label"}, alternating positive and negative."""
    rows = []
    for positive, negative in zip(POSITIVE, NEGATIVE, strict=True):
        rows.append({"text": positive, "label": "positive"})
        rows.append({"text": negative, "label": "negative"})
    return rows
