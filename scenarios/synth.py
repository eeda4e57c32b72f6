"""Synthetic customers of an e-commerce platform and a bank, with a written generative story.

The story
---------
A population of people each carries two hidden traits:
- a taste over K shopping categories (electronics, fashion, home, sports, beauty,
  books, toys, grocery, travel), drawn from a sparse Dirichlet: most people care
  about two or three categories;
- an affluence level a ~ N(0, 1).

The bank knows some of these people as customers (several times more of them than
the shop has users). For each it records:
- age band and tenure in years (older people lean to home, toys and grocery);
- income band and credit limit, both driven by affluence;
- card spend over the last year by merchant category: taste × affluence × noise,
  the columns that carry the strongest signal about what a person will buy;
- a savings rate (affluent people save more, big spenders less).

The shop knows its own users (60 % of whom are also bank customers by default). It
records their signup channel and device (weakly informative), an item catalogue
(category, brand, price band; popularity follows a Zipf law; hidden from the
tables, each category is cut into collections of about five complementary items)
and its orders. A person's first order picks a category by taste (or at random,
15 % of the time), then an item of that category by popularity and by how well its
price band fits the person's affluence. Each later order is, with probability 0.45,
a complement of the previous purchase (another item of its collection, by
popularity and price fit), with probability 0.05 a repeat of an earlier purchase,
and otherwise a fresh choice by taste as above. So the shop's own history carries
real signal (co-purchases and sequence, what item-kNN and EASE exploit), while
taste, which the bank's spend columns reveal, drives every fresh choice. Orders
carry a timestamp and a rating; ratings below 4 are browsing the shop does not
count as a purchase. A share of users is cold: two or three purchases in all, and
their later purchases follow the previous one only 10 % of the time (one-off
buyers, mostly led by taste). Everyone else buys between 4 and 30 times (and holds
4 to 7 bank products).

For the second story (the bank recommends its own products) the roles swap: the
bank's take-up history of cards, instalment plans, insurance and savings products
follows the same hidden traits (travellers take travel cards, electronics buyers
instalment plans, families home insurance, the affluent premium cards and savings),
and the shop contributes behaviour columns: orders and spend per category, basket
size, return rate and days since the last order.

IDs are phone numbers, written as "+1 (555) 201-3344" by the shop and as
"15552013344" or "555-201-3344" by the bank, so only normalisation (kind "phone",
country code "1") lets PSI find them. Everything is seeded and sized by arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ("electronics", "fashion", "home", "sports", "beauty", "books", "toys", "grocery", "travel")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
INCOME_BANDS = ("<20k", "20-40k", "40-60k", "60-100k", "100k+")
PRICE_BANDS = ("budget", "mid", "premium")
# how much each category's taste shifts the age band (older people lean home, toys, grocery)
_AGE_LEAN = np.array([-1.0, -1.2, 1.0, -0.5, -0.3, 0.3, 1.2, 1.0, 0.2])
PRODUCTS = (  # the bank's catalogue: name, kind, taste it follows, affluence it wants
    ("everyday debit card", "card", None, -1.0), ("cashback credit card", "card", "grocery", 0.0),
    ("travel rewards card", "card", "travel", 0.8), ("premium metal card", "card", "fashion", 1.8),
    ("student card", "card", "books", -1.5), ("electronics instalment plan", "instalment", "electronics", 0.0),
    ("furniture instalment plan", "instalment", "home", 0.3),
    ("sports gear instalment plan", "instalment", "sports", 0.0),
    ("travel insurance", "insurance", "travel", 0.5), ("home contents insurance", "insurance", "home", 0.5),
    ("gadget insurance", "insurance", "electronics", 0.2), ("family health insurance", "insurance", "toys", 0.8),
    ("easy-access savings", "savings", None, 0.0), ("fixed-term deposit", "savings", None, 1.2),
    ("kids savings account", "savings", "toys", 0.5), ("investment fund", "savings", "books", 1.6),
)


@dataclass(frozen=True)
class World:
    """Hidden traits of everyone, and who is a customer where."""

    taste: np.ndarray  # (people, K)
    affluence: np.ndarray  # (people,)
    age: np.ndarray  # index into AGE_BANDS
    shop: np.ndarray  # person indices of the shop's users
    bank: np.ndarray  # person indices of the bank's customers
    cold: np.ndarray  # bool per person: buys only two or three times
    phone: np.ndarray  # 10-digit national numbers


def make_world(shop_users: int, overlap: float = 0.6, bank_multiple: float = 3.0, cold_share: float = 0.35,
               seed: int = 0) -> World:
    """`shop_users` shop users, `overlap` of them bank customers; the bank has `bank_multiple` times more."""
    rng = np.random.default_rng(seed)
    shared = int(round(shop_users * overlap))
    bank_users = max(int(round(shop_users * bank_multiple)), shared)
    people = shop_users + bank_users - shared
    taste = rng.dirichlet(np.full(len(CATEGORIES), 0.25), size=people)
    affluence = rng.normal(size=people)
    age_score = taste @ _AGE_LEAN + rng.normal(0, 0.8, size=people) + 0.3 * affluence
    age = np.clip(np.digitize(age_score, [-1.2, -0.5, 0.1, 0.6, 1.1]), 0, len(AGE_BANDS) - 1)
    order = rng.permutation(people)
    shop = np.sort(order[:shop_users])
    bank = np.sort(np.r_[order[:shared], order[shop_users:]])
    phone = 200_000_0000 + rng.choice(800_000_0000, size=people, replace=False)
    return World(taste, affluence, age, shop, bank, rng.random(people) < cold_share, phone)


def shop_phone(number: int) -> str:
    s = f"{number:010d}"
    return f"+1 ({s[:3]}) {s[3:6]}-{s[6:]}"


def bank_phone(number: int, rng: np.random.Generator) -> str:
    s = f"{number:010d}"
    return f"1{s}" if rng.random() < 0.5 else f"{s[:3]}-{s[3:6]}-{s[6:]}"


def _purchase_counts(world: World, people: np.ndarray, rng: np.random.Generator, most: int = 30) -> np.ndarray:
    return np.where(world.cold[people], rng.integers(2, 4, size=people.size),
                    np.minimum(4 + rng.geometric(0.12, size=people.size), most))


def _choose(weights: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(weights.size, p=weights / weights.sum()))


# ---- story 1: the shop recommends, the bank contributes -------------------------------------


def bank_customers(world: World, rng: np.random.Generator, with_products: bool = False) -> pd.DataFrame:
    """The bank's view of its customers (financial profile)."""
    p = world.bank
    aff = world.affluence[p]
    income = np.clip(np.digitize(aff + rng.normal(0, 0.4, p.size), [-1.0, -0.3, 0.4, 1.2]), 0, len(INCOME_BANDS) - 1)
    frame = {
        "phone": [bank_phone(n, rng) for n in world.phone[p]],
        "age_band": [AGE_BANDS[a] for a in world.age[p]],
        "income_band": [INCOME_BANDS[i] for i in income],
        "tenure_years": np.round(np.clip(world.age[p] * 4 + rng.gamma(2, 2, p.size), 0, 45), 1),
        "credit_limit": np.round(np.exp(8.3 + 0.6 * aff + rng.normal(0, 0.25, p.size)), -2),
    }
    yearly = np.exp(7.0 + 0.5 * aff)
    for k, cat in enumerate(CATEGORIES):
        frame[f"spend_{cat}"] = np.round(yearly * world.taste[p, k] * rng.lognormal(0, 0.35, p.size), 2)
    total = sum(frame[f"spend_{c}"] for c in CATEGORIES)
    frame["savings_rate"] = np.round(np.clip(0.08 + 0.05 * aff - total / 2e5 + rng.normal(0, 0.03, p.size), 0, 0.6), 3)
    if with_products:
        frame["segment"] = np.where(aff > 1.0, "private", np.where(aff > -0.5, "retail", "basic"))
    return pd.DataFrame(frame)


def shop_catalogue(items: int, rng: np.random.Generator, collection_size: int = 5) -> pd.DataFrame:
    """Items with category, brand, price band; hidden: Zipf popularity and the collection (complements)."""
    category = rng.integers(0, len(CATEGORIES), size=items)
    brand = [f"{CATEGORIES[c][:3]}-brand-{rng.integers(0, 6)}" for c in category]
    price = rng.integers(0, len(PRICE_BANDS), size=items)
    collection = np.empty(items, dtype=np.int64)
    for k in range(len(CATEGORIES)):  # each category cut at random into collections of about `collection_size`
        members = rng.permutation(np.flatnonzero(category == k))
        collection[members] = k * items + np.arange(members.size) // collection_size
    return pd.DataFrame({"sku": [f"SKU{j:05d}" for j in range(items)], "category": [CATEGORIES[c] for c in category],
                         "brand": brand, "price_band": [PRICE_BANDS[b] for b in price],
                         "popularity": 1.0 / (1 + rng.permutation(items)) ** 0.9, "collection": collection})


def shop_orders(world: World, catalogue: pd.DataFrame, rng: np.random.Generator, follow: float = 0.45,
                cold_follow: float = 0.1, repeat: float = 0.05) -> pd.DataFrame:
    """Orders driven by taste, popularity, price fit and the previous purchase; low ratings are browsing."""
    cat_of = catalogue["category"].map({c: k for k, c in enumerate(CATEGORIES)}).to_numpy()
    price = catalogue["price_band"].map({b: i for i, b in enumerate(PRICE_BANDS)}).to_numpy()
    pop = catalogue["popularity"].to_numpy()
    collection = catalogue["collection"].to_numpy()
    by_cat = [np.flatnonzero(cat_of == k) for k in range(len(CATEGORIES))]
    rows = []
    counts = _purchase_counts(world, world.shop, rng)
    for person, n in zip(world.shop, counts):
        fit = np.exp(-0.8 * (price - (1 + np.clip(world.affluence[person], -1, 1))) ** 2)
        bought: list[int] = []
        t = 0.0
        for _ in range(n):
            r = rng.random()
            complements = np.setdiff1d(np.flatnonzero(collection == collection[bought[-1]]), bought) if bought else []
            if len(complements) and r < (cold_follow if world.cold[person] else follow):  # a complement of the last
                pool = complements
            elif bought and r < follow + repeat:  # buys something again
                pool = np.array(bought)
            else:
                k = _choose(world.taste[person], rng) if rng.random() < 0.85 else int(rng.integers(len(CATEGORIES)))
                pool = by_cat[k] if by_cat[k].size else np.arange(len(catalogue))
            j = int(pool[_choose(pop[pool] * fit[pool], rng)])
            bought.append(j)
            t += rng.exponential(20.0)
            rows.append((person, j, t, int(rng.integers(4, 6))))
        for _ in range(int(rng.poisson(1.0))):  # browsing with a low rating: not a purchase
            rows.append((person, int(rng.integers(len(catalogue))), t * rng.random(), int(rng.integers(1, 4))))
    frame = pd.DataFrame(rows, columns=["person", "item", "day", "rating"])
    frame["customer_phone"] = [shop_phone(world.phone[p]) for p in frame["person"]]
    frame["sku"] = catalogue["sku"].to_numpy()[frame["item"]]
    frame["timestamp"] = (pd.Timestamp("2025-01-01") + pd.to_timedelta(frame["day"], unit="D")).dt.strftime(
        "%Y-%m-%dT%H:%M:%S")
    return frame[["customer_phone", "sku", "rating", "timestamp"]]


def shop_users(world: World, rng: np.random.Generator) -> pd.DataFrame:
    p = world.shop
    young = world.age[p] <= 1
    return pd.DataFrame({"customer_phone": [shop_phone(n) for n in world.phone[p]],
                         "signup_channel": rng.choice(["organic", "social", "search", "referral"], size=p.size),
                         "device": np.where(rng.random(p.size) < np.where(young, 0.8, 0.4), "mobile", "desktop")})


# ---- story 2: the bank recommends its products, the shop contributes --------------------------


def bank_products() -> pd.DataFrame:
    return pd.DataFrame({"product_id": [f"P{i:02d}" for i in range(len(PRODUCTS))],
                         "name": [p[0] for p in PRODUCTS], "kind": [p[1] for p in PRODUCTS]})


def bank_takeup(world: World, rng: np.random.Generator) -> pd.DataFrame:
    """Which products bank customers took up, when: by taste and affluence."""
    want = np.array([p[3] for p in PRODUCTS])
    follows = [CATEGORIES.index(p[2]) if p[2] else None for p in PRODUCTS]
    rows = []
    counts = _purchase_counts(world, world.bank, rng, most=7)
    for person, n in zip(world.bank, counts):
        taste, aff = world.taste[person], world.affluence[person]
        score = np.array([7.0 * taste[k] if k is not None else 0.3 for k in follows]) - 0.4 * (want - aff) ** 2
        weights = np.exp(score)
        taken = rng.choice(len(PRODUCTS), size=n, replace=False, p=weights / weights.sum())
        day = np.sort(rng.uniform(0, 1500, size=taken.size))
        rows += [(bank_phone(world.phone[person], rng), f"P{j:02d}", f"{d:.2f}") for j, d in zip(taken, day)]
    return pd.DataFrame(rows, columns=["customer", "product_id", "opened_day"])


def shop_behaviour(world: World, rng: np.random.Generator) -> pd.DataFrame:
    """The shop's view of its users as behaviour columns (story 2's passive party)."""
    p = world.shop
    frame: dict = {"customer_phone": [shop_phone(n) for n in world.phone[p]]}
    activity = rng.gamma(3.0, 6.0, p.size) * np.exp(0.2 * world.affluence[p])
    for k, cat in enumerate(CATEGORIES):
        frame[f"orders_{cat}"] = rng.poisson(activity * world.taste[p, k])
    frame["avg_basket"] = np.round(np.exp(3.5 + 0.5 * world.affluence[p] + rng.normal(0, 0.3, p.size)), 2)
    frame["return_rate"] = np.round(rng.beta(2, 12, p.size), 3)
    frame["days_since_last_order"] = rng.integers(0, 365, p.size)
    frame["device"] = np.where(world.age[p] <= 1, "mobile", rng.choice(["mobile", "desktop"], p.size))
    return pd.DataFrame(frame)


def write_ecommerce_bank(shop: Path, bank: Path, shop_users_count: int, items: int, seed: int,
                         **world_args: float) -> dict:
    """Story 1 tables: the shop's (users, catalogue, orders) into `shop`, the bank's (customers) into `bank`."""
    rng = np.random.default_rng(seed + 1)
    world = make_world(shop_users_count, seed=seed, **world_args)
    shop.mkdir(parents=True, exist_ok=True)
    bank.mkdir(parents=True, exist_ok=True)
    catalogue = shop_catalogue(items, rng)
    paths = {"shop_users": shop / "shop_users.csv", "catalogue": shop / "catalogue.csv",
             "orders": shop / "orders.csv", "bank_customers": bank / "bank_customers.csv"}
    shop_users(world, rng).to_csv(paths["shop_users"], index=False)
    catalogue.drop(columns=["popularity", "collection"]).to_csv(paths["catalogue"], index=False)
    shop_orders(world, catalogue, rng).to_csv(paths["orders"], index=False)
    bank_customers(world, rng).to_csv(paths["bank_customers"], index=False)
    return paths


def write_bank_offers(bank: Path, shop: Path, shop_users_count: int, seed: int, **world_args: float) -> dict:
    """Story 2 tables: the bank's (customers, products, take-up) into `bank`, the shop's (behaviour) into `shop`."""
    rng = np.random.default_rng(seed + 2)
    world = make_world(shop_users_count, seed=seed, **world_args)
    bank.mkdir(parents=True, exist_ok=True)
    shop.mkdir(parents=True, exist_ok=True)
    paths = {"bank_customers": bank / "bank_customers.csv", "products": bank / "products.csv",
             "takeup": bank / "takeup.csv", "shop_behaviour": shop / "shop_behaviour.csv"}
    customers = bank_customers(world, rng, with_products=True)
    customers[["phone", "age_band", "segment", "tenure_years"]].to_csv(paths["bank_customers"], index=False)
    bank_products().to_csv(paths["products"], index=False)
    bank_takeup(world, rng).to_csv(paths["takeup"], index=False)
    shop_behaviour(world, rng).to_csv(paths["shop_behaviour"], index=False)
    return paths
